-- lua/worker.lua: worker.run end to end on the real store binding over an
-- in-memory SQLite, in dry-run with a fake transport: the job's outcome,
-- the instance row, domain claims, rollback and redaction.
local memstore = require "memstore"
local store = memstore.install()

local describe_store = memstore.describer(describe, pending)

describe_store("worker.run", function()
  local instances, plan, worker, dokku

  local function load(answer)
    dokku = memstore.dokku("dry-run", answer)
    for _, m in ipairs({ "executor", "converge", "plan", "worker" }) do
      package.loaded[m] = nil
    end
    instances, plan, worker = require "instances", require "plan", require "worker"
  end

  before_each(function()
    memstore.reset()
    load()
    memstore.boot()
  end)

  -- An instance and its job, claimed as the scheduler would (state running).
  local function queue(sub, tier, spec, operation)
    local inst = instances.get(sub) or {
      subscription_id = sub, account_id = "acc_1", app_name = "mr-" .. sub:gsub("_", "") .. "-abcd1234", tier = tier,
      status = "provisioning", spec = plan.spec_of(spec or {}), applied = {}, urls = {}, limits = {},
    }
    instances.save(inst)
    local id = instances.create_job(sub, operation or "provision", { backup_data = false })
    instances.update_job(id, { state = "running" })
    return id, inst
  end

  local function domains_of(sub)
    local out = {}
    for _, r in ipairs(store.query("SELECT domain FROM domains WHERE subscription_id = ? ORDER BY domain", sub)) do
      out[#out + 1] = r.domain
    end
    return out
  end

  it("provisions: every step done, the instance running with its model and its domains claimed", function()
    local id = queue("sub_1", "free")
    worker.run(id)
    local job, inst = instances.job(id), instances.get("sub_1")
    assert.are.equal("succeeded", job.state, job.error)
    assert.are.equal("running", inst.status)
    assert.is_true(inst.dry_run)
    assert.is_truthy(next(inst.applied))
    assert.are.equal(#dokku.sent, job.result.commands)
    assert.are.equal(job.steps_total, job.steps_done)
    assert.are.equal(0, #store.query("SELECT 1 AS x FROM steps WHERE job_id = ? AND state <> 'done'", id))
    assert.is_truthy(inst.urls.frontend)
    local claimed = domains_of("sub_1")
    assert.is_true(#claimed >= 1)
    assert.truthy(inst.urls.frontend:find(claimed[1], 1, true) or inst.urls.backend:find(claimed[1], 1, true))
  end)

  it("refuses a domain another instance serves before anything reaches Dokku", function()
    worker.run((queue("sub_1", "enterprise", { custom_domain = "chat.example.org" })))
    assert.are.same("running", instances.get("sub_1").status)
    dokku.sent = {}
    local id = queue("sub_2", "enterprise", { custom_domain = "chat.example.org" })
    worker.run(id)
    local job = instances.job(id)
    assert.are.equal("failed", job.state)
    assert.matches("chat%.example%.org is already served by another instance", job.error)
    assert.are.equal("failed", instances.get("sub_2").status)
    assert.are.same({}, dokku.sent)
    assert.are.same({}, domains_of("sub_2"))
  end)

  it("deprovisions and gives its domain claims up", function()
    worker.run((queue("sub_1", "enterprise", { custom_domain = "chat.example.org" })))
    assert.is_true(#domains_of("sub_1") > 0)
    local id = queue("sub_1", nil, nil, "deprovision")
    worker.run(id)
    assert.are.equal("succeeded", instances.job(id).state, instances.job(id).error)
    local inst = instances.get("sub_1")
    assert.are.equal("deprovisioned", inst.status)
    assert.are.same({}, inst.applied)
    assert.are.same({}, domains_of("sub_1"))
  end)

  it("fails a provision with a redacted error and rolls back what it created", function()
    local secret = "customer-secret-12345"
    load(function(text)
      if text:find("git:from-image", 1, true) then
        return { exit = 1, stderr = "cannot read ENV: API_KEY=" .. secret }
      end
    end)
    local id = queue("sub_1", "free", { config_updates = { API_KEY = secret } })
    worker.run(id)
    local job = instances.job(id)
    assert.are.equal("failed", job.state)
    assert.matches("git:from%-image", job.error)
    assert.is_nil(job.error:find(secret, 1, true))
    for _, r in ipairs(store.query("SELECT output, error FROM steps WHERE job_id = ?", id)) do
      assert.is_nil((r.output or ""):find(secret, 1, true))
      assert.is_nil((r.error or ""):find(secret, 1, true))
    end
    assert.is_true(#store.query("SELECT 1 AS x FROM steps WHERE job_id = ? AND resource = 'undo'", id) > 0)
    assert.matches("destroy", dokku.sent[#dokku.sent])
    assert.are.equal("failed", instances.get("sub_1").status)
  end)

  it("leaves a job that is not running alone", function()
    local inst = { subscription_id = "sub_1", app_name = "mr-a", tier = "free", status = "provisioning",
                   spec = {}, urls = {}, limits = {} }
    instances.save(inst)
    local id = instances.create_job("sub_1", "provision", {})
    worker.run(id)
    assert.are.equal("queued", instances.job(id).state)
    assert.are.same({}, dokku.sent)
  end)
end)
