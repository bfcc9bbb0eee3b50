local fakes = require "fakes"
local boot = require "boot"

describe("service settings", function()
  assert(fakes)
  local function cfg(extra)
    local c = { BASE_DOMAIN = "mindroom.chat", MINDROOM_BACKEND_IMAGE = "mindroom/backend:1",
                MINDROOM_FRONTEND_IMAGE = "mindroom/frontend:1", TUWUNEL_IMAGE = "ghcr.io/tulir/tuwunel:1",
                SYNAPSE_IMAGE = "matrixdotorg/synapse:1", MINDROOM_IMAGE = "ghcr.io/mindroom-ai/mindroom:v1",
                INSTANCE_DATA_BASE = "/var/lib/dokku/data/storage",
                LETSENCRYPT_EMAIL = "ops@example.com", dokku_mode = "dokku" }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end

  it("takes Dokku's storage root as INSTANCE_DATA_BASE, for any DOKKU_LIB_ROOT", function()
    assert.are.equal("/var/lib/dokku/data/storage", assert(boot.settings(cfg())).instance_data_base)
    assert.are.equal("/opt/dokku/data/storage",
      assert(boot.settings(cfg({ INSTANCE_DATA_BASE = "/opt/dokku/data/storage/" }))).instance_data_base)
  end)

  it("refuses an INSTANCE_DATA_BASE where storage:ensure-directory creates nothing", function()
    for _, p in ipairs({ "/srv/data", "/var/lib/dokku/data", "/var/lib/dokku/data/storage/sub", "/data/storage2" }) do
      local s, err = boot.settings(cfg({ INSTANCE_DATA_BASE = p }))
      assert.is_nil(s, p)
      assert.matches("^INSTANCE_DATA_BASE: must be Dokku's storage root", err)
    end
  end)
end)
