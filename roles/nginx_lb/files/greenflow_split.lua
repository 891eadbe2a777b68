-- greenflow_split: the blue/green split of each app, held in nginx's shared memory, so that a change
-- of the shares is not a reload (greenflow.platform, nginx_lb role; issue #16).
--
-- Installed by the nginx_lb role (reload-free mode) under nginx_lb_lua_dir; nginx.conf loads it:
--   lua_shared_dict greenflow_split 1m;
--   init_by_lua_block { greenflow_split = require "greenflow_split"
--                       greenflow_split.seed("<app>", "<its greenflow-upstream-<app>.conf>") ... }
--   server { listen unix:<control socket>;
--            location = /greenflow/split { content_by_lua_block { greenflow_split.control() } } }
-- and each app's vhost:
--   set_by_lua_block $<app>_backend { return greenflow_split.pick("<app>") }
--
-- Keys of the dict: <app> -> green share in percent (0-100); pools:<app> -> the colours that have
-- servers ("blue", "green" or "blue,green"); serial:<app> -> changes accepted since the last seed.
-- The file greenflow.platform.nginx_upstream owns is the truth: seed() reads it whenever nginx starts
-- or reloads, and the module writes it before it changes the dict (plugins/module_utils/_nginx_switch.py).

local _M = {}

local dict = ngx.shared.greenflow_split
local names = {}  -- per worker: app -> {"<app>_blue", "<app>_green"}
local APP = "^[a-z][a-z0-9_]*$"

local function has(pools, colour)
    for c in pools:gmatch("[a-z]+") do
        if c == colour then return true end
    end
    return false
end

-- The split a file holds: {green = n, pools = "blue,green"}, or nil, kind ("missing" | "bad"), message.
local function read_file(app, path)
    local f, err = io.open(path, "r")
    if not f then return nil, "missing", err end
    local text = f:read("*a")
    f:close()
    if not text then return nil, "bad", path .. ": unreadable" end
    -- lua mode: the flat line nginx_upstream writes for us (parse_split_line is its Python twin)
    local a, b, g, pools = text:match("\n# greenflow%-split: app=([a-z][a-z0-9_]*) blue=(%d+) green=(%d+) pools=([a-z,]+)\n")
    if not a then
        -- a file still in split_clients mode (a host switched to reload-free, before the role
        -- converts its files): the compact, sorted JSON of the state header
        local state = text:match("\n# greenflow%-state: ([^\n]+)") or text:match("^# greenflow%-state: ([^\n]+)")
        if not state then return nil, "bad", path .. ": no greenflow-state header" end
        b, g = state:match('"shares":{"blue":(%d+),"green":(%d+)}')
        local pb, pg = state:match('"pools":{"blue":%[(.-)%],"green":%[(.-)%]}')
        if not b or not pb then return nil, "bad", path .. ": cannot read shares and pools in its header" end
        a = app
        pools = (pb ~= "" and "blue" or "") .. ((pb ~= "" and pg ~= "") and "," or "") .. (pg ~= "" and "green" or "")
    end
    if a ~= app then return nil, "bad", path .. ": the file is app " .. a .. "'s, not " .. app .. "'s" end
    b, g = tonumber(b), tonumber(g)
    if b > 100 or g > 100 or b + g ~= 100 then return nil, "bad", path .. ": shares do not add up to 100" end
    if (b > 0 and not has(pools, "blue")) or (g > 0 and not has(pools, "green")) then
        return nil, "bad", path .. ": a share on a pool without servers"
    end
    return {green = g, pools = pools}
end

-- init_by_lua (the master, at start and at every reload; nginx -t does not run it). A missing file
-- leaves the app out (it has no upstream blocks either; the module's first install reloads and seeds
-- it); a file that cannot be read raises, so nginx refuses to start, or refuses the reload and keeps
-- its running configuration, workers and dict.
function _M.seed(app, path)
    if type(app) ~= "string" or not app:match(APP) then error("greenflow_split: bad app name " .. tostring(app)) end
    local st, kind, err = read_file(app, path)
    if not st then
        if kind == "missing" then
            ngx.log(ngx.WARN, "greenflow_split: ", app, " not seeded, no file (", err, ")")
            dict:delete(app)
            dict:delete("pools:" .. app)
            dict:delete("serial:" .. app)
            return
        end
        error("greenflow_split: cannot seed " .. app .. ": " .. err)
    end
    assert(dict:set(app, st.green))
    assert(dict:set("pools:" .. app, st.pools))
    assert(dict:set("serial:" .. app, 0))
end

-- set_by_lua, per request: one shared-dict read, one CRC-32 of $request_id (the same key as
-- split_clients, so a logged request id tells which pool it had to get; lua_pick is the Python twin).
function _M.pick(app)
    local n = names[app]
    if not n then
        n = {app .. "_blue", app .. "_green"}
        names[app] = n
    end
    local green = dict:get(app)
    if not green or green <= 0 then return n[1] end
    if green >= 100 then return n[2] end
    if ngx.crc32_short(ngx.var.request_id) % 10000 < green * 100 then return n[2] end
    return n[1]
end

local function answer(status, msg)
    ngx.status = status
    ngx.header["Content-Type"] = "text/plain"
    ngx.header["Content-Length"] = #msg + 1
    ngx.print(msg, "\n")
    return ngx.exit(status)
end

local function current(app)
    local g = dict:get(app) or 0
    return string.format("app=%s blue=%d green=%d serial=%d", app, 100 - g, g, dict:get("serial:" .. app) or 0)
end

-- content_by_lua of the control location, on a unix socket in a root-only directory:
--   GET /greenflow/split?app=<app>                    -> 200 "app=<app> blue=<n> green=<n> serial=<n>"
--   PUT /greenflow/split?app=<app>&blue=<n>&green=<n> -> validated, then one dict:set, then the same line
-- Anything wrong is refused before the dict is touched: malformed or duplicate arguments (400), an app
-- that was not seeded (404), other methods (405), a share on a pool without servers (409).
function _M.control()
    local args, err = ngx.req.get_uri_args(8)
    if err == "truncated" then return answer(400, "too many arguments") end
    local app = args.app
    if type(app) ~= "string" or not app:match(APP) then return answer(400, "bad or missing app") end
    local pools = dict:get("pools:" .. app)
    if not pools then return answer(404, "unknown app " .. app .. " (not seeded from its file)") end
    local method = ngx.req.get_method()
    if method == "GET" or method == "HEAD" then return answer(200, current(app)) end
    if method ~= "PUT" then return answer(405, "GET or PUT only") end
    for k in pairs(args) do
        if k ~= "app" and k ~= "blue" and k ~= "green" then return answer(400, "unknown argument") end
    end
    local b, g = args.blue, args.green
    if type(b) ~= "string" or type(g) ~= "string" or not b:match("^%d%d?%d?$") or not g:match("^%d%d?%d?$") then
        return answer(400, "blue and green must each be given once, as integers 0-100")
    end
    b, g = tonumber(b), tonumber(g)
    if b > 100 or g > 100 or b + g ~= 100 then return answer(400, "blue + green must be 100") end
    if (b > 0 and not has(pools, "blue")) or (g > 0 and not has(pools, "green")) then
        return answer(409, "a pool without servers cannot take traffic (pools with servers: " .. pools .. ")")
    end
    local ok, serr = dict:set(app, g)  -- one key: the change is atomic for every worker
    if not ok then return answer(500, "shared dict: " .. tostring(serr)) end
    dict:incr("serial:" .. app, 1, 0)
    return answer(200, current(app))
end

return _M
