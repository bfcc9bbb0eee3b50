-- Specs for lua/validate.lua: good values pass (normalized), hostile ones that
-- could reach a Dokku command are refused, and request errors name their field.
local cjson = require "cjson"
local helper = require "helper"
local validate = require "validate"
local validate_request = require "validate_request"

-- Values no name-like validator may accept: shell and Dokku metacharacters,
-- flags, control bytes, bad UTF-8, empty and overlong values, wrong types.
local HOSTILE = {
  "", " ", "a b", "a;b", ";", "a$(id)", "$(id)", "`id`", "a`id`b", "a|b", "a&b", "a&&b",
  "a\nb", "a\rb", "a\tb", "a\0b", "a'b", "'a'", 'a"b', '"a"', "a\\b", "a>b", "a<b", "a*", "a?",
  "--force", "-n", "-e", "--help", "--app=x", "../etc", "a/../b", "\xff\xfe", "caf\xc3", "é",
  string.rep("a", 300), 1, 1.5, true, false, {}, cjson.null,
}

local function refuses(fn, v, label)
  local out, err = fn(v)
  assert.is_nil(out, ("%s accepted %q"):format(label, tostring(v)))
  assert.is_string(err, label)
end

local function accepts(fn, v, expected, label)
  local out, err = fn(v)
  assert.is_nil(err, label .. ": " .. tostring(v))
  assert.equal(expected == nil and v or expected, out, label)
end

local NAME_VALIDATORS = {
  "subscription_id", "account_id", "app_name", "dokku_app", "service_name", "tier_name",
  "domain", "env_key", "image", "email", "matrix_type",
}

describe("validate: every name validator", function()
  for _, name in ipairs(NAME_VALIDATORS) do
    it(name .. " refuses hostile values", function()
      for _, v in ipairs(HOSTILE) do refuses(validate[name], v, name) end
      refuses(validate[name], nil, name)
    end)
  end
end)

-- validator → { good = { value or { value, normalized } }, bad = { ... } }
local CASES = {
  subscription_id = {
    good = { "sub_123", "a", "SUB-abc_9", "9f1c2d3e-aaaa-bbbb-cccc-0123456789ab", string.rep("x", 64) },
    bad = { string.rep("x", 65), "_sub", "-sub", "sub.123", "sub:1", "sub@x", "sub/1" },
  },
  account_id = {
    good = { "acc_456", "0" },
    bad = { "acc 456", "-acc", "acc#1" },
  },
  app_name = {
    good = { "mr-sub123-abc12345", "mr-a-00000000", "mr-abcdefgh-zzzzzzzz" },
    bad = { "mr-sub123-abc1234", "mr-sub123-abc123456", "mr-abcdefghi-abc12345", "mr--abc12345",
      "MR-sub123-abc12345", "mr-sub_123-abc12345", "xr-sub123-abc12345", "mr-sub123-abc12345-backend",
      "mr-sub123-ABC12345", "mr-sub123-abc12345\n" },
  },
  dokku_app = {
    good = { "mr-sub123-abc12345-backend", "ab", "a1", string.rep("a", 63) },
    bad = { "a", "1app", "app-", "-app", "a--b", "app.x", "App", "app_x", string.rep("a", 64), "app:latest" },
  },
  service_name = {
    good = { "mr-sub123-abc12345-db", "Svc_1", "x" },
    bad = { "_svc", "-svc", "svc.db", string.rep("s", 65) },
  },
  tier_name = {
    good = { "free", "pro-2", "a_b", string.rep("t", 32) },
    bad = { "Free", "1tier", "_t", "-t", string.rep("t", 33), "tier.x" },
  },
  domain = {
    good = { "example.com", "api.mr-sub123-abc12345.mindroom.chat", "a.b", "xn--bcher-kva.example",
      { "WWW.Example.COM", "www.example.com" }, "1password.com", "123.example.com" },
    bad = { "localhost", "example.com.", ".example.com", "a..b", "*.example.com", "-a.com", "a-.com",
      "exa mple.com", "ex_ample.com", string.rep("a", 64) .. ".com",
      string.rep(string.rep("a", 63) .. ".", 4) .. "com", "example.com/x", "example.com:443", "ex;ample.com",
      "1.2.3.4", "example.123" },
  },
  env_key = {
    good = { "FOO", "_X", "A1_B2", string.rep("K", 64) },
    bad = { "foo", "1FOO", "FOO-BAR", "FOO.BAR", "FOO=1", string.rep("K", 65) },
  },
  image = {
    good = { "mindroom/backend:latest", "matrixdotorg/synapse:latest", "ghcr.io/tulir/tuwunel:latest", "nginx",
      "localhost:5000/app", "registry.example.com:5000/team/app_x:v1.2-rc", "a__b/c.d-e--f:1",
      "repo@sha256:" .. string.rep("a", 64), "repo:tag@sha256:" .. string.rep("0", 64) },
    bad = { "Mindroom/backend", "repo:", "repo:-tag", "repo:" .. string.rep("t", 129), "repo/", "/repo", "repo//x",
      "repo@sha256:abc", "repo@sha256:" .. string.rep("A", 64), "repo@md5:" .. string.rep("a", 64),
      "a___b", "a..b", "a.-b", "repo.", "repo-", "host:99999/repo", "ho_st.io:5000/repo", "repo:ta g",
      "ghcr.io/" .. string.rep("a", 250) },
  },
  email = {
    good = { "ops@mindroom.chat", "first.last+tag@example.co.uk", { "Ops@Example.COM", "Ops@example.com" } },
    bad = { "ops", "@example.com", "ops@", "ops@@example.com", "ops@localhost", ".ops@example.com",
      "o..ps@example.com", "ops.@example.com", "-ops@example.com", "ops example@x.com",
      string.rep("a", 65) .. "@example.com", "a@" .. string.rep("b", 250) .. ".com" },
  },
  matrix_type = {
    good = { "tuwunel", "synapse" },
    bad = { "Synapse", "dendrite", "conduit" },
  },
}

describe("validate: accepted and refused values", function()
  for name, c in pairs(CASES) do
    it(name, function()
      for _, g in ipairs(c.good) do
        if type(g) == "table" then accepts(validate[name], g[1], g[2], name)
        else accepts(validate[name], g, nil, name) end
      end
      for _, b in ipairs(c.bad) do refuses(validate[name], b, name) end
    end)
  end
end)

describe("validate.new_app_name", function()
  it("builds mr-{prefix}-{8 random} that validate.app_name accepts", function()
    local asked
    local name = validate.new_app_name("SUB_123-xyz", function(n) asked = n; return ("a1"):rep(n // 2) end)
    assert.equal(8, asked)
    assert.equal("mr-sub123-a1a1a1a1", name)
    assert.equal(name, (validate.app_name(name)))
  end)
end)

describe("validate.app_prefix", function()
  it("takes the first 8 characters, lower-cased, alphanumerics only", function()
    assert.equal("sub123", validate.app_prefix("sub_123"))
    assert.equal("subabcd", validate.app_prefix("SUB-ABCDEFGH"))
    assert.equal("abcdefgh", validate.app_prefix("ABCDEFGHIJKL"))
    assert.equal("9f1c2d3e", validate.app_prefix("9f1c2d3e-aaaa-bbbb"))
    assert.equal("a", validate.app_prefix("a"))
  end)

  it("falls back to 'sub' when nothing is left", function()
    assert.equal("sub", validate.app_prefix("________x"))
    assert.equal("sub", validate.app_prefix("-_-_"))
  end)

  it("always yields a prefix that makes a valid app name", function()
    for _, s in ipairs({ "sub_123", "________", "ZZZZZZZZZZ", "a-b-c-d-e", "\xff\xfe", "$(id);`x`" }) do
      local app = "mr-" .. validate.app_prefix(s) .. "-abc12345"
      assert.equal(app, validate.app_name(app))
      assert.equal(app, validate.dokku_app(app .. "-backend"):sub(1, #app))
    end
  end)

  it("refuses a non-string", function()
    refuses(validate.app_prefix, 42, "app_prefix")
  end)
end)

describe("validate.reserved_env_key", function()
  it("is true for what the provisioner or Dokku manages", function()
    for _, k in ipairs({ "DOKKU_APP_TYPE", "DOKKU_PROXY_PORT", "MINDROOM_CONFIG_YAML", "MINDROOM_ADMIN_PASSWORD",
      "DATABASE_URL", "REDIS_URL", "GIT_REV", "PORT" }) do
      assert.is_true(validate.reserved_env_key(k), k)
    end
  end)

  it("is false for customer keys", function()
    for _, k in ipairs({ "OPENAI_API_KEY", "FOO", "PORTAL", "MY_DATABASE_URL", "DOKKU", "MINDROOM" }) do
      assert.is_false(validate.reserved_env_key(k), k)
    end
    assert.is_false(validate.reserved_env_key(nil))
  end)
end)

describe("validate.env_value", function()
  it("accepts any UTF-8 text, metacharacters included (values travel base64-encoded)", function()
    for _, v in ipairs({ "", "plain", "$(id); rm -rf / `x` | & 'q' \"q\" ${HOME} \\n !", "line1\nline2", "--force",
      "-n",
      "é 日本 🚀", string.rep("v", 16 * 1024) }) do
      accepts(validate.env_value, v, nil, "env_value")
    end
  end)

  it("refuses NUL, invalid UTF-8, oversize and non-strings", function()
    for _, v in ipairs({ "a\0b", "\xff", "\xc3", "\xed\xa0\x80", "\xc0\xaf", string.rep("v", 16 * 1024 + 1),
      1, true, {}, cjson.null }) do
      refuses(validate.env_value, v, "env_value")
    end
  end)

  -- issue 12 item 17: Dokku >= 0.38 writes the ENV file with godotenv v1.5.1
  -- and reads it back; the cases were found exhaustively against the
  -- simulator's port of that code (dokku_sim_spec has the end-to-end check).
  it("refuses what Dokku 0.38 would store changed or could not read back", function()
    for _, v in ipairs({ "007", "00", "+5", "+0", "-0", "-007", "0123456789", "a\\", "\\", "x\\\\",
      'x"', '"', '"quoted"' }) do
      refuses(validate.env_value, v, "env_value")
    end
    local _, why = validate.env_value("007")
    assert.matches("leading zeros", why)
    assert.is_nil(why:find("007", 1, true), "the message does not echo the value")
    assert.matches("backslash", select(2, validate.env_value("a\\")))
    assert.matches("double quote", select(2, validate.env_value('a"')))
  end)

  it("accepts numbers godotenv keeps as they are, and quotes and backslashes inside a value", function()
    for _, v in ipairs({ "0", "7", "-5", "9223372036854775807", "-9223372036854775808",
      "99999999999999999999", "0x10", "1e3", "1.50", " 5", "5 ", "0a", '"x', 'a"b', "\\x", "a\\b",
      "$HOME", "${A}", "\\$", "a\\n" }) do
      accepts(validate.env_value, v, nil, "env_value")
    end
  end)

  it("godotenv_stored gives what Dokku 0.38 reads back for a number", function()
    assert.are.equal("7", validate.godotenv_stored("007"))
    assert.are.equal("5", validate.godotenv_stored("+5"))
    assert.are.equal("0", validate.godotenv_stored("-0"))
    assert.are.equal("abc", validate.godotenv_stored("abc"))
    assert.is_nil((validate.godotenv_stored("a\\")))
  end)
end)

describe("validate.utf8_valid", function()
  it("accepts UTF-8 and refuses overlong forms, surrogates and stray bytes", function()
    assert.is_true(validate.utf8_valid("héllo 日本 🚀"))
    assert.is_true(validate.utf8_valid(""))
    for _, s in ipairs({ "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\x80" }) do
      assert.is_false(validate.utf8_valid(s))
    end
    assert.is_false(validate.utf8_valid(42))
  end)
end)

describe("validate_request.limits", function()
  it("normalizes the request names to tier names", function()
    local l = assert(validate_request.limits({ memory_mb = 2048.0, cpu_limit = 1, storage_gb = 10, agents = 6,
      messages_per_day = 2000 }))
    assert.same({ memory_mb = 2048, cpu = 1.0, storage_gb = 10, agents = 6, messages_per_day = 2000 }, l)
    assert.equal("integer", math.type(l.memory_mb))
    assert.equal("float", math.type(l.cpu))
  end)

  it("keeps null messages_per_day as an explicit unlimited and leaves absent keys out", function()
    assert.same({ messages_per_day = cjson.null }, validate_request.limits({ messages_per_day = cjson.null }))
    assert.same({}, validate_request.limits({}))
  end)

  local bad = {
    { { memory_mb = 63 }, "memory_mb" }, { { memory_mb = 262145 }, "memory_mb" },
    { { memory_mb = 100.5 }, "memory_mb" },
    { { memory_mb = "512" }, "memory_mb" }, { { memory_mb = cjson.null }, "memory_mb" },
    { { cpu_limit = 0 }, "cpu_limit" }, { { cpu_limit = -1 }, "cpu_limit" }, { { cpu_limit = 64.5 }, "cpu_limit" },
    { { cpu_limit = 0 / 0 }, "cpu_limit" }, { { cpu_limit = math.huge }, "cpu_limit" },
    { { cpu_limit = "1" }, "cpu_limit" }, { { cpu_limit = 1e-300 }, "cpu_limit" },
    { { cpu_limit = 0.0004 }, "cpu_limit" },
    { { storage_gb = 0 }, "storage_gb" }, { { storage_gb = 10001 }, "storage_gb" },
    { { agents = 0 }, "agents" }, { { agents = 1001 }, "agents" }, { { agents = true }, "agents" },
    { { messages_per_day = -1 }, "messages_per_day" }, { { messages_per_day = 10000001 }, "messages_per_day" },
    { { cpu = 1 }, "cpu" }, { { gpus = 1 }, "gpus" },
    -- below the original service's minimums (its ResourceLimits: memory_mb ge=128, cpu_limit ge=0.1)
    { { memory_mb = 127 }, "memory_mb" }, { { memory_mb = 64 }, "memory_mb" },
    { { cpu_limit = 0.09 }, "cpu_limit" }, { { cpu_limit = 0.001 }, "cpu_limit" },
  }
  it("accepts the original service's minimums themselves (128 MB, 0.1 CPU)", function()
    assert.same({ memory_mb = 128, cpu = 0.1 }, validate_request.limits({ memory_mb = 128, cpu_limit = 0.1 }))
  end)

  it("refuses out-of-range values, wrong types and unknown keys, naming the key", function()
    for _, c in ipairs(bad) do
      local l, err, key = validate_request.limits(c[1])
      assert.is_nil(l)
      assert.is_string(err)
      assert.equal(c[2], key)
    end
  end)

  it("refuses a non-object", function()
    for _, v in ipairs({ 1, "x", { 1, 2 }, cjson.null }) do refuses(validate_request.limits, v, "limits") end
  end)
end)

-- Request validators ---------------------------------------------------------

local function merged(base, changes)
  local t = {}
  for k, v in pairs(base) do t[k] = v end
  for k, v in pairs(changes) do t[k] = v end
  return t
end

local function expect_field(result, err, field)
  assert.is_nil(result)
  assert.is_table(err)
  assert.equal("invalid_value", err.code)
  assert.equal(field, err.field)
  assert.is_string(err.message)
  if field then assert.equal(field, err.message:sub(1, #field)) end
end

-- field first, so a validator call can be the last argument and keep both results.
local function refused_with(field, ...)
  expect_field(select(1, ...), select(2, ...), field)
end

describe("validate_request.provision_request", function()
  local tiers
  local BASE = { subscription_id = "sub_123", account_id = "acc_456", tier = "professional" }

  setup(function()
    tiers = helper.shipped_tiers()
  end)

  it("accepts the SPEC example and fills defaults", function()
    local r = assert(validate_request.provision_request(cjson.decode([[
      {"subscription_id":"sub_123","account_id":"acc_456","tier":"professional",
       "limits":{"memory_mb":2048,"cpu_limit":1.0,"storage_gb":10,"agents":6,"messages_per_day":2000},
       "enable_matrix":true,"matrix_type":"tuwunel","custom_domain":null}]]), tiers))
    assert.same({
      subscription_id = "sub_123", account_id = "acc_456", tier = "professional",
      limits = { memory_mb = 2048, cpu = 1.0, storage_gb = 10, agents = 6, messages_per_day = 2000 },
      enable_matrix = true, matrix_type = "tuwunel",
    }, r)
    r = assert(validate_request.provision_request({ subscription_id = "s1", tier = "free", extra = "ignored" }, tiers))
    assert.same({ subscription_id = "s1", tier = "free", enable_matrix = false, matrix_type = "tuwunel" }, r)
  end)

  it("treats JSON null as absent", function()
    local r = assert(validate_request.provision_request(merged(BASE, {
      account_id = cjson.null, limits = cjson.null, enable_matrix = cjson.null, matrix_type = cjson.null,
    }), tiers))
    assert.is_nil(r.account_id)
    assert.is_nil(r.limits)
    assert.is_false(r.enable_matrix)
    assert.equal("tuwunel", r.matrix_type)
  end)

  it("accepts and lower-cases an enterprise custom domain", function()
    local r = assert(validate_request.provision_request(
      merged(BASE, { tier = "enterprise", custom_domain = "AI.Example.com" }),
      tiers))
    assert.equal("ai.example.com", r.custom_domain)
  end)

  local cases = {
    { { subscription_id = cjson.null }, "subscription_id" },
    { { subscription_id = "sub;id" }, "subscription_id" },
    { { subscription_id = 123 }, "subscription_id" },
    { { account_id = "$(id)" }, "account_id" },
    { { account_id = { "x" } }, "account_id" },
    { { tier = "platinum" }, "tier" },
    { { tier = 3 }, "tier" },
    { { tier = cjson.null }, "tier" },
    { { limits = "big" }, "limits" },
    { { limits = { 1, 2 } }, "limits" },
    { { limits = { memory_mb = 1 } }, "limits.memory_mb" },
    { { limits = { cpu_limit = "1" } }, "limits.cpu_limit" },
    { { limits = { messages_per_day = -5 } }, "limits.messages_per_day" },
    { { limits = { swap = 1 } }, "limits.swap" },
    { { limits = { ["bad key;"] = 1 } }, "limits" },
    { { enable_matrix = "true" }, "enable_matrix" },
    { { enable_matrix = 1 }, "enable_matrix" },
    { { matrix_type = "dendrite" }, "matrix_type" },
    { { custom_domain = "evil.com; rm -rf /" }, "custom_domain" },
    { { custom_domain = "example.com" }, "custom_domain" },
    { { tier = "enterprise", custom_domain = 5 }, "custom_domain" },
  }
  for _, c in ipairs(cases) do
    local field = c[2]
    it("names " .. field .. " for " .. tostring(next(c[1])), function()
      local r, err = validate_request.provision_request(merged(BASE, c[1]), tiers)
      expect_field(r, err, field)
    end)
  end

  it("says which tiers exist", function()
    local _, err = validate_request.provision_request(merged(BASE, { tier = "platinum" }), tiers)
    assert.matches("'platinum'", err.message)
    assert.matches("enterprise, free, professional, starter", err.message, 1, true)
    _, err = validate_request.provision_request(merged(BASE, { tier = "x\n$(id)" }), tiers)
    assert.is_nil(err.message:find("$(id)", 1, true))
  end)

  it("requires subscription_id and tier", function()
    refused_with("subscription_id", validate_request.provision_request({ tier = "free" }, tiers))
    refused_with("tier", validate_request.provision_request({ subscription_id = "s" }, tiers))
  end)

  it("refuses Matrix on a tier that does not allow it", function()
    local t = helper.shipped_tiers()
    t.free.flags = { matrix = false, custom_domains = false }
    refused_with("enable_matrix",
      validate_request.provision_request({ subscription_id = "s", tier = "free", enable_matrix = true }, t))
    assert(validate_request.provision_request({ subscription_id = "s", tier = "free", enable_matrix = false }, t))
  end)

  it("refuses a body that is not an object", function()
    for _, body in ipairs({ "x", 1, true, cjson.null, { 1, 2 } }) do
      local r, err = validate_request.provision_request(body, tiers)
      assert.is_nil(r)
      assert.equal("invalid_body", err.code)
      assert.is_nil(err.field)
    end
    local r, err = validate_request.provision_request(nil, tiers)
    assert.is_nil(r)
    assert.equal("invalid_body", err.code)
  end)
end)

describe("validate_request.update_request", function()
  local tiers
  local BASE = { subscription_id = "sub_123", app_name = "mr-sub123-abc12345" }

  setup(function()
    tiers = helper.shipped_tiers()
  end)

  it("leaves what the request omits as nil (keep)", function()
    local r = assert(validate_request.update_request(BASE, tiers))
    assert.same({ subscription_id = "sub_123", app_name = "mr-sub123-abc12345" }, r)
  end)

  it("accepts tier, limits, config updates and matrix changes", function()
    local r = assert(validate_request.update_request(merged(BASE, {
      tier = "enterprise", limits = { memory_mb = 4096 },
      config_updates = { OPENAI_API_KEY = "sk-x", NOTE = "$(id); `x`" },
      enable_matrix = false, matrix_type = "synapse", custom_domain = "chat.example.org",
    }), tiers))
    assert.same({
      subscription_id = "sub_123", app_name = "mr-sub123-abc12345", tier = "enterprise",
      limits = { memory_mb = 4096 }, config_updates = { OPENAI_API_KEY = "sk-x", NOTE = "$(id); `x`" },
      enable_matrix = false, matrix_type = "synapse", custom_domain = "chat.example.org",
    }, r)
  end)

  local cases = {
    { { subscription_id = "--force" }, "subscription_id" },
    { { app_name = "mr-sub123-abc12345; id" }, "app_name" },
    { { app_name = cjson.null }, "app_name" },
    { { app_name = "other-app" }, "app_name" },
    { { tier = "gold" }, "tier" },
    { { limits = { agents = 0 } }, "limits.agents" },
    { { config_updates = "FOO=1" }, "config_updates" },
    { { config_updates = { "FOO=1" } }, "config_updates" },
    { { config_updates = { foo = "1" } }, "config_updates.foo" },
    { { config_updates = { ["FOO BAR"] = "1" } }, "config_updates" },
    { { config_updates = { ["FOO;id"] = "1" } }, "config_updates" },
    { { config_updates = { DATABASE_URL = "postgres://evil" } }, "config_updates.DATABASE_URL" },
    { { config_updates = { DOKKU_LETSENCRYPT_EMAIL = "x" } }, "config_updates.DOKKU_LETSENCRYPT_EMAIL" },
    { { config_updates = { MINDROOM_CONFIG_YAML = "x" } }, "config_updates.MINDROOM_CONFIG_YAML" },
    { { config_updates = { PORT = "1" } }, "config_updates.PORT" },
    { { config_updates = { FOO = 1 } }, "config_updates.FOO" },
    { { config_updates = { FOO = cjson.null } }, "config_updates.FOO" },
    { { config_updates = { FOO = "a\0b" } }, "config_updates.FOO" },
    { { config_updates = { FOO = "\xff" } }, "config_updates.FOO" },
    { { config_updates = { FOO = string.rep("x", 16385) } }, "config_updates.FOO" },
    { { config_updates = { PIN = "0042" } }, "config_updates.PIN" },
    { { config_updates = { OFFSET = "+5" } }, "config_updates.OFFSET" },
    { { config_updates = { PATH_SUFFIX = "C:\\" } }, "config_updates.PATH_SUFFIX" },
    { { config_updates = { QUOTED = '"x"' } }, "config_updates.QUOTED" },
    { { enable_matrix = "no" }, "enable_matrix" },
    { { matrix_type = 1 }, "matrix_type" },
    { { custom_domain = "a b.com" }, "custom_domain" },
    { { tier = "starter", custom_domain = "chat.example.org" }, "custom_domain" },
  }
  for _, c in ipairs(cases) do
    local field = c[2]
    it("names " .. field, function()
      local r, err = validate_request.update_request(merged(BASE, c[1]), tiers)
      expect_field(r, err, field)
    end)
  end

  it("reports the first bad config key in sorted order", function()
    local _, err = validate_request.update_request(
      merged(BASE, { config_updates = { ZED = 1, ALPHA = 2, MID = 3 } }), tiers)
    assert.equal("config_updates.ALPHA", err.field)
  end)

  it("caps config_updates at 64 entries", function()
    local cu = {}
    for i = 1, 64 do cu["K" .. i] = "v" end
    assert(validate_request.update_request(merged(BASE, { config_updates = cu }), tiers))
    cu.K65 = "v"
    refused_with("config_updates", validate_request.update_request(merged(BASE, { config_updates = cu }), tiers))
  end)

  it("caps an instance's merged config_updates: 64 keys and 256 KiB in all (issue 12 item 18)", function()
    local cu = {}
    for i = 1, 16 do cu[("K%02d"):format(i)] = string.rep("v", 16 * 1024 - 3) end
    assert.is_true(validate.config_updates_total(cu)) -- 16 * 16 KiB = 256 KiB exactly
    cu.K17 = "x"
    local ok, why = validate.config_updates_total(cu)
    assert.is_nil(ok)
    assert.matches("at most 262144 %(256 KiB%) in all", why)
    local many = {}
    for i = 1, 65 do many["K" .. i] = "v" end
    assert.matches("at most 64 in all", select(2, validate.config_updates_total(many)))
  end)

  it("checks flags against the current tier when the tier is kept", function()
    refused_with("custom_domain",
      validate_request.update_request(merged(BASE, { custom_domain = "chat.example.org" }), tiers, "professional"))
    assert(validate_request.update_request(merged(BASE, { custom_domain = "chat.example.org" }), tiers, "enterprise"))
  end)

  it("refuses a body that is not an object", function()
    local r, err = validate_request.update_request("[]", tiers)
    assert.is_nil(r)
    assert.equal("invalid_body", err.code)
  end)
end)

describe("validate_request.deprovision_request", function()
  it("defaults backup_data to true", function()
    assert.same({ subscription_id = "sub_123", app_name = "mr-sub123-abc12345", backup_data = true },
      validate_request.deprovision_request({ subscription_id = "sub_123", app_name = "mr-sub123-abc12345" }))
    assert.is_true(validate_request.deprovision_request({ subscription_id = "s", app_name = "mr-s-abc12345",
      backup_data = cjson.null }).backup_data)
    assert.is_false(validate_request.deprovision_request({ subscription_id = "s", app_name = "mr-s-abc12345",
      backup_data = false }).backup_data)
  end)

  local cases = {
    { {}, "subscription_id" },
    { { subscription_id = "s" }, "app_name" },
    { { subscription_id = "s;", app_name = "mr-s-abc12345" }, "subscription_id" },
    { { subscription_id = "s", app_name = "mr-s-abc12345 --force" }, "app_name" },
    { { subscription_id = "s", app_name = "mr-s-abc12345", backup_data = "false" }, "backup_data" },
    { { subscription_id = "s", app_name = "mr-s-abc12345", backup_data = 0 }, "backup_data" },
  }
  for _, c in ipairs(cases) do
    it("names " .. c[2], function()
      local r, err = validate_request.deprovision_request(c[1])
      expect_field(r, err, c[2])
    end)
  end

  it("refuses a body that is not an object", function()
    local r, err = validate_request.deprovision_request(cjson.null)
    assert.is_nil(r)
    assert.equal("invalid_body", err.code)
  end)
end)

describe("validate.api_base (OPENROUTER_API_BASE)", function()
  it("takes https, and http only to loopback, without a trailing slash", function()
    assert.equal("https://openrouter.ai/api/v1", validate.api_base("https://openrouter.ai/api/v1/"))
    assert.equal("http://127.0.0.1:8123/api/v1", validate.api_base("http://127.0.0.1:8123/api/v1"))
    assert.equal("http://localhost:9/x", validate.api_base("http://localhost:9/x"))
  end)
  it("refuses cleartext to a remote host, user info, queries and other schemes", function()
    for _, bad in ipairs({ "http://openrouter.ai/api/v1", "https://u:p@openrouter.ai/api/v1",
                           "https://openrouter.ai/api/v1?x=1", "ftp://openrouter.ai", "openrouter.ai",
                           "https://openrouter.ai/a b", 42 }) do
      assert.is_nil((validate.api_base(bad)), tostring(bad))
    end
  end)
end)
