/* bind_store: SQL on the calling thread's store connection, for Lua.
 * store.query(sql, ...) → rows; store.exec(sql, ...) → changes;
 * store.tx(fn, ...) runs fn inside BEGIN IMMEDIATE … COMMIT (ROLLBACK and
 * re-raise on error); store.read(fn, ...) runs fn inside a deferred BEGIN …
 * COMMIT, so several queries see one snapshot (WAL) without taking the write
 * lock; store.is_open(). Parameters are bound, never interpolated.
 * store.error(message, code) makes the error object tx and read raise when
 * SQLite refuses a BEGIN or COMMIT: {message, code} (code: SQLite's extended
 * result code), printed as its message; the Lua store views raise the same
 * for a failed statement, so a caller classifies a store error by its code,
 * never by its text. */
#include "lua/runtime.h"
#include "store/store.h"

#include <lauxlib.h>
#include <string.h>

static const char ERROR_MT[] = "mrprov.store.error";

static int error_tostring(lua_State *L)
{
	lua_getfield(L, 1, "message");
	if (!lua_isstring(L, -1))
		lua_pushliteral(L, "store error");
	return 1;
}

/* Pushes {message = message, code = code} with the error metatable. */
static void push_error(lua_State *L, const char *message, lua_Integer code)
{
	lua_createtable(L, 0, 2);
	lua_pushstring(L, message);
	lua_setfield(L, -2, "message");
	lua_pushinteger(L, code);
	lua_setfield(L, -2, "code");
	if (luaL_newmetatable(L, ERROR_MT)) {
		lua_pushcfunction(L, error_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_setmetatable(L, -2);
}

static int l_error(lua_State *L)
{
	const char *message = luaL_checkstring(L, 1);
	lua_Integer code = luaL_optinteger(L, 2, -1);
	push_error(L, message, code);
	return 1;
}

/* Pushes the error object for what SQLite refused on db: "store: <what>:
 * <SQLite's message>" and its extended code, both read before anything
 * (a rollback) can change or close the connection. */
static void push_refusal(lua_State *L, sqlite3 *db, const char *what)
{
	const char *msg = lua_pushfstring(L, "store: %s: %s", what, sqlite3_errmsg(db));
	push_error(L, msg, sqlite3_extended_errcode(db));
}

static int fail(lua_State *L, sqlite3 *db)
{
	if (db)
		store_note_error(sqlite3_extended_errcode(db));
	luaL_pushfail(L);
	lua_pushstring(L, db ? sqlite3_errmsg(db) : "store is not open");
	lua_pushinteger(L, db ? sqlite3_extended_errcode(db) : -1);
	return 3;
}

/* Prepares argument 1 (store_stmt: cached per thread) and binds arguments
 * 2.. ; NULL statement on failure. Hand it back with store_stmt_done. */
static sqlite3_stmt *prepare(lua_State *L, sqlite3 *db)
{
	size_t len;
	const char *sql = luaL_checklstring(L, 1, &len);
	sqlite3_stmt *st = store_stmt(db, sql, len);
	if (!st)
		return NULL;
	int n = lua_gettop(L);
	if (n - 1 != sqlite3_bind_parameter_count(st)) {
		store_stmt_done(st);
		luaL_error(L, "store: %d parameters given, the statement has %d", n - 1,
			   sqlite3_bind_parameter_count(st));
	}
	for (int i = 2; i <= n; i++) {
		int idx = i - 1;
		switch (lua_type(L, i)) {
		case LUA_TNIL:
			sqlite3_bind_null(st, idx);
			break;
		case LUA_TBOOLEAN:
			sqlite3_bind_int(st, idx, lua_toboolean(L, i));
			break;
		case LUA_TNUMBER:
			if (lua_isinteger(L, i))
				sqlite3_bind_int64(st, idx, lua_tointeger(L, i));
			else
				sqlite3_bind_double(st, idx, lua_tonumber(L, i));
			break;
		case LUA_TSTRING: {
			size_t sl;
			const char *s = lua_tolstring(L, i, &sl);
			sqlite3_bind_text(st, idx, s, (int)sl, SQLITE_TRANSIENT);
			break;
		}
		default:
			store_stmt_done(st);
			luaL_argerror(L, i, "expected nil, boolean, number or string");
		}
	}
	return st;
}

static void push_column(lua_State *L, sqlite3_stmt *st, int c)
{
	switch (sqlite3_column_type(st, c)) {
	case SQLITE_INTEGER:
		lua_pushinteger(L, sqlite3_column_int64(st, c));
		break;
	case SQLITE_FLOAT:
		lua_pushnumber(L, sqlite3_column_double(st, c));
		break;
	case SQLITE_NULL:
		lua_pushnil(L);
		break;
	default:
		lua_pushlstring(L, (const char *)sqlite3_column_text(st, c), (size_t)sqlite3_column_bytes(st, c));
	}
}

static int l_query(lua_State *L)
{
	sqlite3 *db = store_conn();
	if (!db)
		return fail(L, db);
	sqlite3_stmt *st = prepare(L, db);
	if (!st)
		return fail(L, db);
	lua_newtable(L);
	int row = 0, rc;
	int ncol = sqlite3_column_count(st);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		lua_createtable(L, 0, ncol);
		for (int c = 0; c < ncol; c++) {
			push_column(L, st, c);
			lua_setfield(L, -2, sqlite3_column_name(st, c));
		}
		lua_rawseti(L, -2, ++row);
	}
	store_stmt_done(st);
	if (rc != SQLITE_DONE)
		return fail(L, db);
	return 1;
}

static int l_exec(lua_State *L)
{
	sqlite3 *db = store_conn();
	if (!db)
		return fail(L, db);
	sqlite3_stmt *st = prepare(L, db);
	if (!st)
		return fail(L, db);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	store_stmt_done(st);
	if (rc != SQLITE_DONE)
		return fail(L, db);
	lua_pushinteger(L, sqlite3_changes(db));
	return 1;
}

static int l_tx(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	sqlite3 *db = store_conn();
	if (!db)
		return luaL_error(L, "store is not open");
	int nested = !sqlite3_get_autocommit(db);
	if (!nested && store_begin() < 0) {
		push_refusal(L, db, "cannot begin a transaction");
		return lua_error(L);
	}
	int nargs = lua_gettop(L) - 1;
	int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
	if (nested) {
		if (rc != LUA_OK)
			return lua_error(L);
		return lua_gettop(L);
	}
	if (rc != LUA_OK) {
		store_rollback();
		return lua_error(L);
	}
	if (store_commit() < 0) {
		push_refusal(L, db, "commit failed");
		store_rollback(); /* may close db */
		return lua_error(L);
	}
	return lua_gettop(L);
}

/* A read snapshot: in WAL mode the first SELECT of a deferred transaction
 * fixes what every later SELECT of it sees, so a view built from two rows
 * written by one transaction elsewhere is never torn. Nested in a tx or a
 * read, it just calls fn. */
static int l_read(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	sqlite3 *db = store_conn();
	if (!db)
		return luaL_error(L, "store is not open");
	int nested = !sqlite3_get_autocommit(db);
	if (!nested && store_read_begin() < 0) {
		push_refusal(L, db, "cannot begin a read");
		return lua_error(L);
	}
	int nargs = lua_gettop(L) - 1;
	int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
	if (!nested)
		store_read_end();
	if (rc != LUA_OK)
		return lua_error(L);
	return lua_gettop(L);
}

static int l_is_open(lua_State *L)
{
	lua_pushboolean(L, store_is_open());
	return 1;
}

int luaopen_mrprov_store(lua_State *L)
{
	static const luaL_Reg fns[] = {
		{ "query", l_query },
		{ "exec", l_exec },
		{ "tx", l_tx },
		{ "read", l_read },
		{ "is_open", l_is_open },
		{ "error", l_error },
		{ NULL, NULL },
	};
	luaL_newlib(L, fns);
	return 1;
}
