-- Authorization of each proxied request (nginx access phase): the gate's verdict, reused from memory while it may be.
--
-- Loaded by stack/nginx/mlflow-proxy.conf.template (lua_package_path + access_by_lua_block); needs its
-- lua_shared_dict mlflow_gate_verdicts, its internal location /_mlflow_gate_check and, in the proxied location, the
-- variables $auth_user $auth_roles $auth_error $auth_subject $auth_issuer $auth_permissions (declared with `set`).
--
-- The gate decides from exactly three values: the method, the raw request URI and the Authorization header. A
-- verdict is kept under the full text of those three (no hash: keys are compared whole, so no two requests share
-- an entry) in nginx's shared memory, never on disk, for the lifetime the gate grants in X-Accel-Expires: never
-- past the token's exp, at most the gate's --verdict-cache-seconds. Only allows (2xx) and denials (403) are kept;
-- a 401, a gate error or a gate that cannot be reached always goes back to the gate. docs/security.md, "The
-- verdict cache".

local lrucache = require("resty.lrucache")

local M = {}

local verdicts = ngx.shared.mlflow_gate_verdicts
-- Each worker also keeps its most recent verdicts as Lua values (no lock, no copy, no parsing on a hit), under the
-- same keys and until the same moment as the shared store: 2000 of them, at most ~3 MiB per worker.
local recent = assert(lrucache.new(2000))
local capture = ngx.location.capture
local exit = ngx.exit
local get_method = ngx.req.get_method
local now = ngx.now
local var = ngx.var
local byte = string.byte
local concat = table.concat
local find = string.find
local lower = string.lower
local match = string.match
local sub = string.sub
local tonumber = tonumber
local unpack = unpack

local GATE_LOCATION = "/_mlflow_gate_check"
local GATE_OPTIONS = { method = ngx.HTTP_GET }
-- lua_shared_dict keys are at most 65535 bytes; a longer request (nginx's header buffers normally refuse one
-- first) is judged by the gate and not kept.
local MAX_KEY_BYTES = 65535
local SEPARATOR = "\n" -- none of the parts can contain one: nginx ends the request line and each header there

-- The nginx variables the proxied location forwards (X-Forwarded-*) and the error pages read, and the gate's
-- answer header each comes from (lower case: header names are case-insensitive).
local VARIABLES = { "auth_user", "auth_roles", "auth_error", "auth_subject", "auth_issuer", "auth_permissions" }
local HEADERS = {
    "x-auth-user",
    "x-auth-roles",
    "x-auth-error",
    "x-auth-subject",
    "x-auth-issuer",
    "x-auth-permissions",
}

-- A verdict in the shared store: "<expiry (Unix time)>\n<status>\n<value of each header in HEADERS order>".
local function encode(expires, status, fields)
    return expires .. SEPARATOR .. status .. SEPARATOR .. concat(fields, SEPARATOR)
end

-- The same as a Lua value { expiry, status, field... }.
local function decode(stored)
    local verdict = {}
    local start = 0
    for i = 1, 2 + #VARIABLES do
        local stop = find(stored, SEPARATOR, start + 1, true)
        verdict[i] = sub(stored, start + 1, (stop or 0) - 1)
        start = stop
    end
    verdict[1], verdict[2] = tonumber(verdict[1]), tonumber(verdict[2])
    return verdict
end

-- Sets the variables from a verdict; returns its status.
local function apply(verdict)
    for i = 1, #VARIABLES do
        local value = verdict[i + 2]
        if value ~= "" then -- they start empty (`set` in the location)
            var[VARIABLES[i]] = value
        end
    end
    return verdict[2]
end

-- The gate's answer headers in HEADERS order ("" for each one it did not send).
local function answer_fields(headers)
    local by_name = {}
    for name, value in pairs(headers) do
        if type(value) == "table" then -- repeated: not an answer of our gate's, keep none of it
            value = ""
        end
        by_name[lower(name)] = value
    end
    local fields = {}
    for i = 1, #HEADERS do
        fields[i] = by_name[HEADERS[i]] or ""
    end
    return fields, by_name["x-accel-expires"]
end

-- When a verdict stops being reused (Unix time), or nil: not at all. The gate sends "@<unix second>" (the last
-- whole second of reuse, which ends before the token's exp) or "0" (do not reuse); anything else is not reused.
local function expiry(accel_expires)
    if type(accel_expires) ~= "string" or byte(accel_expires, 1) ~= 64 then -- 64: "@"
        return nil
    end
    local last_second = tonumber(match(accel_expires, "^@(%d+)$"))
    if not last_second or last_second + 1 <= now() then
        return nil
    end
    return last_second + 1
end

local function decide(status)
    if status >= 200 and status < 300 then
        return -- allowed: on to proxy_pass
    end
    -- As auth_request: 401 and 403 as such (error_page turns them into MLflow JSON), anything else is the gate
    -- failing, 500, which error_page turns into 503 (fail closed).
    if status == 401 or status == 403 then
        return exit(status)
    end
    return exit(500)
end

function M.authorize()
    local authorization = var.http_authorization
    local key
    if authorization then
        -- The same three values the internal location sends the gate: there $request_method is the main
        -- request's method, and the subrequest keeps the main request's raw URI and headers.
        key = get_method() .. SEPARATOR .. var.request_uri .. SEPARATOR .. authorization
        if #key > MAX_KEY_BYTES then
            key = nil
        else
            local verdict = recent:get(key)
            if verdict then
                return decide(apply(verdict))
            end
            local stored = verdicts:get(key)
            if stored then
                verdict = decode(stored)
                local seconds = verdict[1] - now()
                if seconds > 0 then
                    recent:set(key, verdict, seconds)
                end
                return decide(apply(verdict))
            end
        end
    end

    local answer = capture(GATE_LOCATION, GATE_OPTIONS)
    local status = answer.status
    if status ~= 401 and status ~= 403 and (status < 200 or status >= 300) then
        return exit(500) -- gate down or failing: no verdict, nothing kept
    end
    local fields, accel_expires = answer_fields(answer.header)
    for i = 1, #VARIABLES do
        var[VARIABLES[i]] = fields[i]
    end
    local expires = key and status ~= 401 and expiry(accel_expires)
    if expires then
        local seconds = expires - now()
        -- set() evicts the least recently used verdicts when the zone is full; a failure only means no reuse.
        verdicts:set(key, encode(expires, status, fields), seconds)
        recent:set(key, { expires, status, unpack(fields) }, seconds)
    end
    return decide(status)
end

return M
