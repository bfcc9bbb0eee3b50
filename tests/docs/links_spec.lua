-- The documentation inside the repository (issue 17 item 1):
--  * every relative link of the Markdown files (README.md, docs/, and the
--    other READMEs) resolves: the file exists and, for a #anchor, the target
--    file has a heading with that GitHub anchor;
--  * nothing in the repository refers to files outside it (the steering
--    folder beside the checkout);
--  * docs/api.html loads only its own files under /docs/ and /openapi.json
--    (no other origin, no inline script or style), every file it names is in
--    docs/, and its script reads the specification from /openapi.json, so
--    the page is in step with openapi.json (integration_docs_page renders
--    it in a browser and checks every operation appears);
--  * the vendored renderer is byte for byte what docs/vendor/swagger-ui/SOURCE
--    records (scripts/vendor-swagger-ui.sh writes both);
--  * docs/contract.md names every path of openapi.json.
-- Run from the repository root (ctest docs_links).
local cjson = require "cjson"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function lines_of(cmd)
  local p = assert(io.popen(cmd))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Markdown files of the repository, not of build trees or vendored code.
local function markdown_files()
  return lines_of("find . \\( -name .git -o -name 'build*' -o -name vendor -o -name node_modules \\) -prune"
    .. " -o -name '*.md' -type f -print | sed 's#^\\./##' | sort")
end

-- GitHub's anchor of a heading: lower case, punctuation dropped, spaces to
-- hyphens (then -1, -2 … for repeats).
local PUNCT = { "—", "–", "§", "→", "⊕", "…", "’", "“", "”", "≤", "≥", "×" }
local function slug(text)
  local s = text:gsub("`", ""):lower()
  for _, p in ipairs(PUNCT) do s = s:gsub(p, "") end
  s = s:gsub("[^%w%s%-_\128-\255]", ""):gsub("%s", "-")
  return s
end

local function strip_code(text)
  text = text:gsub("\n```.-\n```", "\n")
  return (text:gsub("`[^`\n]*`", ""))
end

local anchors_cache = {}
local function anchors(path)
  if anchors_cache[path] then return anchors_cache[path] end
  local set, seen = {}, {}
  local text = (read(path) or ""):gsub("\n```.-\n```", "\n")
  for line in text:gmatch("[^\n]+") do
    local h = line:match("^#+%s+(.-)%s*$")
    if h then
      local s = slug(h)
      if seen[s] then
        seen[s] = seen[s] + 1
        s = s .. "-" .. seen[s]
      else
        seen[s] = 0
      end
      set[s] = true
    end
  end
  anchors_cache[path] = set
  return set
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function normalize(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      if #parts == 0 or parts[#parts] == ".." then parts[#parts + 1] = ".." else parts[#parts] = nil end
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return table.concat(parts, "/")
end

-- "file: target: why" for each link of file that does not resolve.
local function broken_links(file)
  local out = {}
  local text = strip_code(read(file))
  for target in text:gmatch("%]%(([^)%s]+)%)") do
    if not target:match("^%a[%w+.-]*:") then -- not https:, mailto: …
      local path, anchor = target:match("^([^#]*)#?(.*)$")
      local resolved = path == "" and file or normalize(dirname(file) .. "/" .. path)
      if resolved:sub(1, 3) == "../" then
        out[#out + 1] = file .. ": " .. target .. ": outside the repository"
      elseif not exists(resolved) then
        out[#out + 1] = file .. ": " .. target .. ": no such file"
      elseif anchor ~= "" and not anchors(resolved)[anchor] then
        out[#out + 1] = file .. ": " .. target .. ": no heading with that anchor in " .. resolved
      end
    end
  end
  return out
end

describe("docs", function()
  it("computes GitHub's anchors", function()
    assert.are.equal("7-guarantees", slug("7. Guarantees"))
    assert.are.equal("52-provision-post-apiv1provision", slug("5.2 Provision: `POST /api/v1/provision`"))
    assert.are.equal("backups-restore-and-upgrades", slug("Backups, restore and upgrades"))
    assert.are.equal("mrprov--the-mindroom-provisioner", slug("mrprov — the MindRoom provisioner"))
    assert.are.equal("the-mindroom-profile-the-default", slug("The `mindroom` profile (the default)"))
  end)

  it("finds a broken link (self-check on a scratch file)", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("# Title\n[ok](#title) [bad](#nope) [gone](no-such-file.md) `[code](ignored.md)`\n")
    f:close()
    local found = broken_links(path)
    os.remove(path)
    assert.are.equal(2, #found)
  end)

  it("every relative link of the Markdown files resolves", function()
    local files = markdown_files()
    assert.is_true(#files >= 5)
    local bad = {}
    for _, file in ipairs(files) do
      for _, b in ipairs(broken_links(file)) do bad[#bad + 1] = b end
    end
    assert.are.same({}, bad)
  end)

  it("nothing in the repository refers to files outside it", function()
    -- the patterns are built from pieces so this file does not match itself
    local patterns = { "%.%./" .. "shared", "/work/" .. "shared", "%.%./%.%./%.%./" .. "shared" }
    local files = lines_of("git ls-files 2>/dev/null | grep -v '^docs/vendor/'")
    assert.is_true(#files > 100, "git ls-files listed the checkout")
    local bad = {}
    for _, file in ipairs(files) do
      local text = read(file)
      if text and not text:find("\0", 1, true) then
        for _, p in ipairs(patterns) do
          if text:find(p) then bad[#bad + 1] = file .. ": " .. p end
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it("docs/api.html loads only its own files and the specification, with no inline script or style", function()
    local html = read("docs/api.html")
    assert.is_string(html)
    local refs = 0
    for attr, url in html:gmatch("%s(%a+)=\"([^\"]*)\"") do
      if attr == "src" or attr == "href" then
        refs = refs + 1
        if url ~= "/openapi.json" then
          local rest = url:match("^/docs/([%w%._%-/]+)$")
          assert.is_truthy(rest, "api.html: " .. attr .. "=\"" .. url .. "\" is not a file under /docs/")
          assert.is_true(exists("docs/" .. rest), "api.html names docs/" .. rest .. ", which does not exist")
        end
      end
      assert.are_not.equal("style", attr, "api.html: an inline style attribute")
      assert.is_nil(attr:match("^on"), "api.html: an inline event handler " .. attr)
    end
    assert.is_true(refs >= 4)
    assert.is_nil(html:find("<style", 1, true), "api.html: an inline <style>")
    for attrs, body in html:gmatch("<script([^>]*)>(.-)</script>") do
      assert.is_truthy(attrs:match("src=\"/docs/"), "api.html: a <script> without src")
      assert.are.equal("", body, "api.html: an inline script")
    end
    local js = read("docs/api.js")
    assert.is_truthy(js:find('fetch("/openapi.json"', 1, true), "api.js reads the specification from /openapi.json")
    assert.is_nil(js:match("https?://"), "api.js names another origin")
  end)

  it("the vendored Swagger UI is what SOURCE records", function()
    local source = read("docs/vendor/swagger-ui/SOURCE")
    assert.is_string(source)
    assert.is_truthy(source:match("package swagger%-ui%-dist\n"))
    local n = 0
    for sum, file in source:gmatch("sha256 (%x+)  ([^\n]+)") do
      n = n + 1
      local got = lines_of("sha256sum " .. "'docs/vendor/swagger-ui/" .. file .. "'")[1] or ""
      assert.are.equal(sum, got:match("^(%x+)"), "docs/vendor/swagger-ui/" .. file)
    end
    assert.is_true(n >= 3)
    assert.is_truthy(read("docs/vendor/swagger-ui/LICENSE"))
  end)

  it("docs/contract.md names every path of openapi.json", function()
    local doc = cjson.decode(read("openapi.json"))
    local contract = read("docs/contract.md")
    local missing = {}
    for path in pairs(doc.paths) do
      if not contract:find(path, 1, true) then missing[#missing + 1] = path end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
