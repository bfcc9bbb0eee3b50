-- The step journal: the product's view of the steps table (every statement
-- on it is here). Each command of a job is journaled as a pending step
-- before it runs, marked running as it starts and done or failed with its
-- outcome after; a job's step counters (jobs.steps_done, steps_total) move
-- with it. Re-planning a job drops its pending steps; a step a crash left
-- running is kept as failed with M.INTERRUPTED.
local instances = require "instances"
local store = require "mrprov.store"
local store_error = require "store_error"
local sys = require "mrprov.sys"

local M = {}

local check = store_error.check

M.INTERRUPTED = "interrupted: mrprov stopped while this command ran; the resumed job probed what it did"

-- The last step number of a job and how many of its steps are done.
function M.next_seq(job_id)
  local rows = check(store.query([[SELECT coalesce(max(seq), 0) AS m, count(CASE WHEN state = 'done' THEN 1 END) AS n
                                     FROM steps WHERE job_id = ?]], job_id))
  return rows[1].m, rows[1].n
end

-- Journals the planned commands as pending steps; returns the first seq.
-- Steps a crash left pending are dropped (the new plan holds what is still
-- missing); one it left running is kept as failed with M.INTERRUPTED (its
-- outcome is unknown: it may have changed the server, see created_by_job);
-- failed ones stay as the job's history.
function M.plan(job, steps)
  return store.tx(function()
    check(store.exec("DELETE FROM steps WHERE job_id = ? AND state = 'pending'", job.id))
    check(store.exec([[UPDATE steps SET state = 'failed', error = ?, finished_at = ?
                        WHERE job_id = ? AND state = 'running']], M.INTERRUPTED, sys.iso_time(), job.id))
    local seq, done = M.next_seq(job.id)
    local first = seq + 1
    local total = done
    for _, s in ipairs(steps) do
      for _, c in ipairs(s.commands) do
        seq = seq + 1
        total = total + 1
        c.seq = seq
        check(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, restart, deploys,
                                               state)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')]],
          job.id, seq, c.resource, c.target, c.display, c.mutating and 1 or 0, c.restart and 1 or 0,
          c.deploys and 1 or 0))
      end
    end
    instances.update_job(job.id, { steps_done = done, steps_total = total })
    return first
  end)
end

-- Appends commands outside the plan (a rollback's, a hook's) as pending
-- mutating steps of resource kind `resource` after the job's last step;
-- sets each command's seq and returns the first.
function M.append(job_id, resource, commands)
  return store.tx(function()
    local first = M.next_seq(job_id) + 1
    for i, c in ipairs(commands) do
      c.seq = first + i - 1
      check(store.exec([[INSERT INTO steps (job_id, seq, resource, target, command, mutating, restart, deploys,
                                             state)
                          VALUES (?, ?, ?, ?, ?, 1, ?, ?, 'pending')]], job_id, c.seq, resource, c.target, c.display,
        c.restart and 1 or 0, c.deploys and 1 or 0))
    end
    check(store.exec("UPDATE jobs SET steps_total = steps_total + ? WHERE id = ?", #commands, job_id))
    return first
  end)
end

-- Marks step seq running (inside the caller's transaction).
function M.start(job_id, seq, now)
  check(store.exec("UPDATE steps SET state = 'running', started_at = ? WHERE job_id = ? AND seq = ?",
    now, job_id, seq))
end

-- Records the outcome r of step seq (inside the caller's transaction).
function M.finish(job_id, seq, r)
  check(store.exec([[UPDATE steps SET state = ?, exit_code = ?, duration_ms = ?, output = ?, error = ?,
                      finished_at = ? WHERE job_id = ? AND seq = ?]],
    r.error and "failed" or "done", r.exit, r.duration_ms, r.output, r.error, sys.iso_time(), job_id, seq))
  if not r.error then
    check(store.exec("UPDATE jobs SET steps_done = steps_done + 1 WHERE id = ?", job_id))
  end
end

-- The job's steps in order, as {target, command, state, error} (for the
-- restarts a job still owes).
function M.history(job_id)
  return check(store.query([[SELECT target, command, restart, deploys, state, error FROM steps
                               WHERE job_id = ? ORDER BY seq]], job_id))
end

-- The commands (display text → true) of the job's steps that are done or
-- that a crash interrupted (they may have completed on the server).
function M.made(job_id)
  local done = {}
  for _, row in ipairs(check(store.query([[SELECT command FROM steps WHERE job_id = ?
                                              AND (state = 'done' OR (state = 'failed' AND error = ?))]],
      job_id, M.INTERRUPTED))) do
    done[row.command] = true
  end
  return done
end

-- Whether a done step of the job restarted or redeployed an app, or made a
-- change that takes effect on the app's next start (the `restart` and
-- `deploys` its resource module or hook marked the command with).
function M.restarted(job_id)
  return check(store.query([[SELECT 1 AS x FROM steps WHERE job_id = ? AND state = 'done'
                               AND (restart = 1 OR deploys = 1) LIMIT 1]], job_id))[1] ~= nil
end

-- Every column of the job's steps, in order (the job view).
function M.steps(job_id)
  return check(store.query("SELECT * FROM steps WHERE job_id = ? ORDER BY seq", job_id))
end

return M
