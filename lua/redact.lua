-- Redaction of everything a Dokku command prints before mrprov keeps it
-- (step journal, job and instance errors, events, the log, the Supabase
-- outbox): known secret values, and credentials Dokku itself prints.
-- dokku-postgres and dokku-redis print a service's connection URL with its
-- password after `:create` even under --quiet (common-functions
-- service_info logs each row with dokku_log_verbose, which --quiet does
-- not silence): `Dsn: postgres://postgres:<password>@dokku-postgres-x:5432/x`.
local M = {}

M.MARK = "[REDACTED]"

-- `scheme://user:password@host` → `scheme://user:[REDACTED]@host`, and
-- `scheme://token@host` → `scheme://[REDACTED]@host`. The user-info runs to
-- the last `@` before the next blank or quote, so a password holding an
-- unencoded `/`, `:` or `@` is still masked whole (a query with an `@` is
-- masked too: harmless).
function M.urls(text)
  return (text:gsub("(%a[%w+.-]*://)([^%s\"'<>`]+)", function(scheme, rest)
    local at
    for i in rest:gmatch("()@") do
      at = i
    end
    if not at then
      return nil
    end
    local userinfo = rest:sub(1, at - 1)
    local user = userinfo:match("^([^:/]*):")
    return scheme .. (user and (user .. ":") or "") .. M.MARK .. rest:sub(at)
  end))
end

-- A `Dsn:` row (service_info's layout, any case) keeps only its label.
function M.dsn_lines(text)
  return (("\n" .. text):gsub("(\n[ \t]*[Dd][Ss][Nn]:[ \t]*)[^\n]*", "%1" .. M.MARK):sub(2))
end

function M.credentials(text)
  return M.dsn_lines(M.urls(text))
end

-- A function masking credentials and every value in secrets (plain text,
-- found verbatim) in a text; nil passes through.
function M.redactor(secrets)
  local list = {}
  for _, s in ipairs(secrets or {}) do
    if type(s) == "string" and s ~= "" then
      list[#list + 1] = s
    end
  end
  -- longest first: a secret that contains another is masked whole
  table.sort(list, function(a, b) return #a > #b end)
  return function(text)
    if not text then
      return text
    end
    text = M.credentials(tostring(text))
    for _, s in ipairs(list) do
      local out, i = {}, 1
      while true do
        local a, b = text:find(s, i, true)
        if not a then
          break
        end
        out[#out + 1] = text:sub(i, a - 1)
        out[#out + 1] = M.MARK
        i = b + 1
      end
      out[#out + 1] = text:sub(i)
      text = table.concat(out)
    end
    return text
  end
end

return M
