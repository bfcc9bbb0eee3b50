local redact = require "redact"

-- What dokku-postgres 1.44.0 / dokku-redis 1.40.1 print after `:create`
-- under --quiet (common-functions service_info: dokku_log_verbose rows), as
-- tests/fixtures/dokku-sim reproduces it.
local PG = table.concat({
  "=====> Postgres container created: mr-a-12345678-db",
  "       Config dir:          /var/lib/dokku/services/postgres/mr-a-12345678-db/data",
  "       Dsn:                 postgres://postgres:96a0e333157bdc931138dcd984d06484@dokku-postgres-mr-a-"
    .. "12345678-db:5432/mr_a_12345678_db",
  "       Exposed ports:       -",
}, "\n")
local REDIS = "       Dsn:                 redis://:09814ac5470535dfe107225f2c4e4044@dokku-redis-x:6379\n"
  .. "       Status: running"

describe("redact", function()
  it("masks the password of a Dsn row and keeps the rest of the output (issue 12 item 1)", function()
    local r = redact.redactor({})
    local out = r(PG)
    assert.is_nil(out:find("96a0e333157bdc931138dcd984d06484", 1, true))
    assert.matches("Postgres container created: mr%-a%-12345678%-db", out)
    assert.matches("\n       Dsn:                 %[REDACTED%]\n", out)
    assert.matches("Exposed ports:", out)
    local rout = r(REDIS)
    assert.is_nil(rout:find("09814ac5470535dfe107225f2c4e4044", 1, true))
    assert.matches("Status: running", rout)
  end)

  it("masks the password of any scheme://user:password@ URL, wherever it is", function()
    assert.are.equal("DATABASE_URL=postgres://postgres:[REDACTED]@dokku-postgres-db:5432/db",
      redact.credentials("DATABASE_URL=postgres://postgres:s3cr3t@dokku-postgres-db:5432/db"))
    assert.are.equal("x redis://:[REDACTED]@h:6379 y", redact.credentials("x redis://:pw@h:6379 y"))
    assert.are.equal('{"url":"https://[REDACTED]@github.com/a"}',
      redact.credentials('{"url":"https://ghp_token@github.com/a"}'))
    -- a password holding unencoded /, : or @ is masked whole
    assert.are.equal("mysql://u:[REDACTED]@h/db", redact.credentials("mysql://u:p/a:s@s@h/db"))
    -- URLs without user-info are left alone
    assert.are.equal("see https://dokku.com/docs and postgres://h:5432/db",
      redact.credentials("see https://dokku.com/docs and postgres://h:5432/db"))
    -- a bare --dsn answer (postgres:info --dsn) is a URL too
    assert.are.equal("postgres://postgres:[REDACTED]@h:5432/d\n",
      redact.credentials("postgres://postgres:pw@h:5432/d\n"))
  end)

  it("masks registered values, longest first, and passes nil through", function()
    local r = redact.redactor({ "abc", "abcdef", "" })
    assert.are.equal("x [REDACTED] y [REDACTED]", r("x abcdef y abc"))
    assert.is_nil(r(nil))
    -- a value equal to the marker's text does not loop
    assert.are.equal("[[REDACTED]]", redact.redactor({ "REDACTED" })("[REDACTED]"))
  end)
end)
