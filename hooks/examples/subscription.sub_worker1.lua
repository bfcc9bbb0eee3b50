-- Example hook: subscription sub_worker1 runs an extra background worker
-- app beside its backend, and marks it bootstrapped once provisioning is
-- done. To use it, copy it into HOOKS_DIR and send SIGHUP.
return {
  description = "an extra worker app with its own limits",

  desired = function(state)
    local backend
    for _, app in ipairs(state.apps) do
      if app.role == "backend" then
        backend = app
      end
    end
    state.apps[#state.apps + 1] = {
      name = state.app .. "-worker",
      image = "mindroom/worker:latest",
      env = { MINDROOM_API_URL = backend.env.MINDROOM_BACKEND_URL, WORKER_QUEUES = "default,reports" },
      limits = { memory_mb = 512, cpu = 0.5 },
    }
  end,

  -- Runs after every successful provision or update, with a Dokku handle
  -- that only reaches this instance's own apps and services.
  after = function(dokku, ctx)
    dokku.run({ "config:set", "--no-restart", ctx.app_name .. "-worker", "WORKER_BOOTSTRAPPED=1" })
  end,
}
