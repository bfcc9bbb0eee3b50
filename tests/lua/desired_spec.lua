local fakes = require "fakes"
local helper = require "helper"
local desired = require "desired"
local json = require "json"

local settings = {
  base_domain = "mindroom.chat", backend_image = "mindroom/backend:1", frontend_image = "mindroom/frontend:1",
  tuwunel_image = "ghcr.io/tulir/tuwunel:1", synapse_image = "matrixdotorg/synapse:1",
  instance_data_base = "/var/lib/dokku/data/storage", letsencrypt_email = "ops@example.com",
}

local function build(tier_name, inst)
  local tiers = helper.shipped_tiers()
  inst = inst or {}
  inst.app_name = inst.app_name or "mr-sub123-abcd1234"
  inst.subscription_id = inst.subscription_id or "sub_123"
  inst.tier = tier_name
  return desired.build({ instance = inst, tier = tiers[tier_name], settings = settings, admin_password = "pw" })
end

local function app(state, role)
  for _, a in ipairs(state.apps) do
    if a.role == role then
      return a
    end
  end
end

describe("desired state", function()
  assert(fakes)

  it("names every Dokku object after the app (SPEC §4)", function()
    local s = build("professional", { enable_matrix = true })
    assert.are.equal("mr-sub123-abcd1234", app(s, "main").name)
    assert.are.equal("mr-sub123-abcd1234-backend", app(s, "backend").name)
    assert.are.equal("mr-sub123-abcd1234-frontend", app(s, "frontend").name)
    assert.are.equal("mr-sub123-abcd1234-matrix", app(s, "matrix").name)
    assert.are.same({ "postgres", "mr-sub123-abcd1234-db" }, { s.services[1].kind, s.services[1].name })
    assert.are.same({ "redis", "mr-sub123-abcd1234-redis" }, { s.services[2].kind, s.services[2].name })
    assert.are.same({ "mr-sub123-abcd1234-backend" }, s.services[1].links)
    assert.are.same({
      frontend = "https://mr-sub123-abcd1234.mindroom.chat",
      backend = "https://api.mr-sub123-abcd1234.mindroom.chat",
      matrix = "https://matrix.mr-sub123-abcd1234.mindroom.chat",
    }, s.urls)
    assert.are.same({ "api.mr-sub123-abcd1234.mindroom.chat" }, app(s, "backend").domains)
  end)

  it("takes the tier's limits outside enterprise, the request's within", function()
    local s = build("starter", { limits = { memory_mb = 9999 } })
    assert.are.equal(512, s.limits.memory_mb)
    assert.are.same({ memory_mb = 512, cpu = 0.5 }, app(s, "backend").limits)
    local e = build("enterprise", { limits = { memory_mb = 16384, messages_per_day = json.null } })
    assert.are.equal(16384, e.limits.memory_mb)
    assert.are.equal(4.0, e.limits.cpu)
    assert.is_nil(e.limits.messages_per_day)
  end)

  it("uses the custom domain for every URL", function()
    local s = build("enterprise", { custom_domain = "ai.example.com", enable_matrix = true })
    assert.are.equal("https://ai.example.com", s.urls.frontend)
    assert.are.same({ "matrix.ai.example.com" }, app(s, "matrix").domains)
  end)

  it("gives the backend its environment, config and password, marked secret", function()
    local s = build("professional", { account_id = "acc_1", config_updates = { FEATURE_X = "on" } })
    local b = app(s, "backend")
    assert.are.equal("pw", b.env.MINDROOM_ADMIN_PASSWORD)
    assert.is_true(b.secret_keys.MINDROOM_ADMIN_PASSWORD)
    assert.are.equal("professional", b.env.MINDROOM_TIER)
    assert.are.equal("acc_1", b.env.MINDROOM_ACCOUNT_ID)
    assert.are.equal("2048", b.env.MINDROOM_MEMORY_MB)
    assert.are.equal("1", b.env.MINDROOM_CPU_LIMIT)
    assert.are.equal("on", b.env.FEATURE_X)
    assert.matches("agents:", b.env.MINDROOM_CONFIG_YAML)
    assert.is_nil(b.env.MINDROOM_CONFIG_YAML:find("pw", 1, true))
    assert.are.equal("/var/lib/dokku/data/storage/mr-sub123-abcd1234", b.storage.host_path)
    assert.are.equal("mindroom/backend:1", b.image)
  end)

  it("marks the Matrix app absent when Matrix is off, and picks the server", function()
    local off = build("professional", { enable_matrix = false })
    assert.is_true(app(off, "matrix").absent)
    assert.are.equal("", app(off, "backend").env.MINDROOM_MATRIX_URL)
    local syn = build("professional", { enable_matrix = true, matrix_type = "synapse" })
    assert.are.equal("matrixdotorg/synapse:1", app(syn, "matrix").image)
    assert.are.equal("/data", app(syn, "matrix").storage.container_path)
    local tuw = build("professional", { enable_matrix = true })
    assert.are.equal("ghcr.io/tulir/tuwunel:1", app(tuw, "matrix").image)
  end)
end)
