local command = require "command"

describe("command.shown_env", function()
  it("shows every value of a config:set as [set] (issue 12 item 2: hook commands)", function()
    local argv = { "config:set", "--no-restart", "mr-a-12345678-worker", "TOKEN=s3cr3t", "B=1" }
    local c = command.new("hook", "mr-a-12345678-worker", argv, command.shown_env(argv))
    assert.are.equal("dokku --quiet config:set --no-restart mr-a-12345678-worker TOKEN=[set] B=[set]", c.display)
    assert.are.equal("TOKEN=s3cr3t", c.argv[4]) -- what is sent is unchanged
  end)

  it("leaves other commands as they are", function()
    local argv = { "domains:set", "app", "a.example.com" }
    assert.are.same(argv, command.shown_env(argv))
  end)
end)
