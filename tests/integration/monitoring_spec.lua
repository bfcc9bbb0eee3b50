-- Monitoring (issue 17 item 3): every metric that the Grafana dashboard
-- (docker/grafana/mrprov-dashboard.json) and the Prometheus alerting rules
-- (docker/prometheus/alerts.yml) name is one the real binary exposes at
-- /metrics (started in dry-run, scraped once). A histogram X is exposed as
-- X_bucket, X_sum and X_count, not as X. Names Prometheus itself records
-- (`up`) are allowed in the rules. promtool checks the rules' syntax and
-- behaviour (ctest promtool_rules).
local H = require "harness"
local cjson = require "cjson"
local lyaml = require "lyaml"

-- Series names Prometheus adds per scrape target, never served by mrprov.
local FROM_PROMETHEUS = { up = true }

-- PromQL words that are not metric names.
local KEYWORDS = {
  by = true, without = true, on = true, ignoring = true, group_left = true, group_right = true,
  ["and"] = true, ["or"] = true, unless = true, bool = true, offset = true, inf = true, nan = true,
}

-- The metric names an expression reads: identifiers outside string
-- literals, label matchers {…}, ranges […] and by/without/on/ignoring/group_*
-- label lists, that are not a function call or a keyword.
local function metric_names(expr)
  local s = expr:gsub('"[^"]*"', '""'):gsub("'[^']*'", "''")
  s = s:gsub("%b{}", " "):gsub("%b[]", " ")
  for _, kw in ipairs({ "by", "without", "on", "ignoring", "group_left", "group_right" }) do
    s = s:gsub("%f[%w_]" .. kw .. "%s*%b()", " ")
  end
  local names = {}
  for name, after in s:gmatch("([%a_:][%w_:]*)%s*(.?)") do
    if after ~= "(" and not KEYWORDS[name:lower()] then
      names[#names + 1] = name
    end
  end
  return names
end

-- Every PromQL expression of the dashboard: the panels' targets and the
-- label_values(metric, label) queries of its variables.
local function dashboard_exprs(path)
  local dash = cjson.decode(H.read_file(path))
  local exprs = {}
  local function walk(panels)
    for _, p in ipairs(panels or {}) do
      for _, t in ipairs(p.targets or {}) do
        exprs[#exprs + 1] = t.expr
      end
      walk(p.panels)
    end
  end
  walk(dash.panels)
  for _, v in ipairs(dash.templating.list) do
    if v.type == "query" then
      local q = type(v.query) == "table" and v.query.query or v.query
      exprs[#exprs + 1] = q:match("^label_values%((.-),%s*[%w_]+%)$") or q
    end
  end
  return exprs
end

local function rule_exprs(path)
  local doc = lyaml.load(H.read_file(path))
  local exprs = {}
  for _, g in ipairs(doc.groups) do
    for _, r in ipairs(g.rules) do
      exprs[#exprs + 1] = r.expr
    end
  end
  return exprs
end

-- The sample names /metrics can carry, from its # TYPE lines (every family
-- is listed whether or not it has a series yet).
local function exposed(text)
  local names, n = {}, 0
  for name, kind in text:gmatch("# TYPE ([%w_:]+) (%a+)") do
    n = n + 1
    if kind == "histogram" then
      names[name .. "_bucket"], names[name .. "_sum"], names[name .. "_count"] = true, true, true
    else
      names[name] = true
    end
  end
  return names, n
end

-- The names of exprs that /metrics does not carry, "name (in: expr)".
local function unknown(exprs, names, allowed)
  local out = {}
  for _, e in ipairs(exprs) do
    for _, name in ipairs(metric_names(e)) do
      if not names[name] and not (allowed or {})[name] then
        out[#out + 1] = name .. " (in: " .. e .. ")"
      end
    end
  end
  return out
end

describe("monitoring", function()
  local names

  setup(function()
    local s = H.start({})
    local code, _, text = H.request(s, "GET", "/metrics")
    assert.are.equal(200, code)
    local n
    names, n = exposed(text)
    assert.is_true(n > 20)
    H.stop(s)
  end)

  teardown(H.cleanup)

  it("reads metric names out of PromQL", function()
    assert.are.same({ "a_bucket" },
      metric_names('histogram_quantile(0.95, sum by (le, tier) (rate(a_bucket{x="b c"}[$__rate_interval])))'))
    assert.are.same({ "a", "b" }, metric_names('max(a{s="p"}) > 0 unless sum(increase(b[15m])) > 0'))
    assert.are.same({ "up" }, metric_names('up{job="mrprov"} == 0'))
    assert.are.same({ "c" }, metric_names("time() - max(c)"))
  end)

  it("the dashboard's queries name only metrics /metrics exposes", function()
    local exprs = dashboard_exprs(H.root .. "/docker/grafana/mrprov-dashboard.json")
    assert.is_true(#exprs > 20)
    assert.are.same({}, unknown(exprs, names))
  end)

  it("the alerting rules name only metrics /metrics exposes (and up)", function()
    local exprs = rule_exprs(H.root .. "/docker/prometheus/alerts.yml")
    assert.is_true(#exprs >= 5)
    assert.are.same({}, unknown(exprs, names, FROM_PROMETHEUS))
  end)
end)
