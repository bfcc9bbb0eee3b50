# Writes OUTPUT, a C file defining SYMBOL[] and SYMBOL_len from the bytes of INPUT.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hexlen)
math(EXPR len "${hexlen} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}" "/* Generated from ${INPUT} by cmake/embed.cmake; do not edit. */\n#include <stddef.h>\nconst char ${SYMBOL}[] = {${bytes} 0};\nconst size_t ${SYMBOL}_len = ${len};\n")
