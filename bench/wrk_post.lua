-- wrk script: load an OpenAI-compatible POST /v1/chat/completions endpoint.
--
-- Exists so bench/gateway_overhead.py can drive the upstream and the gateways
-- with the same non-streaming chat request and read machine-readable results.
--
-- Model and bearer key come from script args (after "--") or the environment:
--   wrk -t1 -c1 -d10s -s bench/wrk_post.lua http://127.0.0.1:8000/v1/chat/completions -- MODEL KEY
--   WRK_MODEL=fixed WRK_KEY=sk-... wrk ... -s bench/wrk_post.lua URL
-- Further args are extra request headers, "Name: value" each (a gateway that routes by headers, Portkey):
--   wrk ... -s bench/wrk_post.lua URL -- fixed x "x-portkey-provider: openai"
-- WRK_BODY_FILE=path sends that file as the body instead (bench/guards.py: a prompt with PII in it).
-- done() prints one line: "WRK_JSON {...}" with rps, p50_ms, p99_ms, requests,
-- duration_s and error counts (status = non-2xx/3xx responses).

local model = os.getenv("WRK_MODEL") or "fixed"
local key = os.getenv("WRK_KEY") or "x"

function init(args)
    if args[1] ~= nil and args[1] ~= "" then model = args[1] end
    if args[2] ~= nil and args[2] ~= "" then key = args[2] end
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer " .. key
    for i = 3, #args do
        local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
        if name == nil then error("header arg is not 'Name: value': " .. args[i]) end
        wrk.headers[name] = value
    end
    wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello."}],'
        .. '"max_tokens":16}'
    local path = os.getenv("WRK_BODY_FILE")
    if path ~= nil and path ~= "" then
        local f = assert(io.open(path, "rb"))
        wrk.body = f:read("*a")
        f:close()
    end
end

function done(summary, latency, requests)
    local secs = summary.duration / 1e6
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"mean_ms":%.3f,'
        .. '"max_ms":%.3f,"requests":%d,"duration_s":%.3f,"errors":{"connect":%d,"read":%d,'
        .. '"write":%d,"status":%d,"timeout":%d}}\n',
        summary.requests / secs,
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000,
        summary.requests, secs, e.connect, e.read, e.write, e.status, e.timeout))
end
