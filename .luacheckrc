std = "lua54"
max_line_length = 120
files["tests/**/*_spec.lua"] = { std = "+busted" }
files["tests/lua/helper.lua"] = { std = "+busted" }
exclude_files = { "build/**" }
-- wrk scripts (bench/wrk): LuaJIT, with wrk's callbacks and tables
files["bench/wrk/*.lua"] = { std = "luajit", globals = { "wrk", "setup", "init", "request", "response", "done" },
                             read_globals = { "tid" } }
