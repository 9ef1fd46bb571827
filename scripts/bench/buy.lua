-- wrk script: POST /api/v1/buy, each request a fresh user with a pre-issued valid token.
-- Usage: TOKENS=tokens.csv PRODUCT=1 THREADS=2 wrk -t2 -c100 -d10s -s scripts/bench/buy.lua http://127.0.0.1:8080
-- tokens.csv comes from `seckill token ACTIVITY --range 1-300000 --out tokens.csv`.
-- Thread k takes lines k, k+THREADS, ..., so no user is used twice.

local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
end

-- Whole requests are formatted up front, so request() only hands the next one out: wrk
-- shares the machine's two cores with the server and Redis, and its Lua time is theirs.
function init(args)
    local threads = tonumber(os.getenv("THREADS") or "2")
    local product = os.getenv("PRODUCT") or "1"
    local headers = { ["Content-Type"] = "application/json" }
    requests = {}
    local i = 0
    for line in io.lines(os.getenv("TOKENS") or "tokens.csv") do
        if i % threads == id then
            local user, token = line:match("^([^,]+),(.+)$")
            local body = string.format(
                '{"product_id":%s,"user_id":"%s","quantity":1,"token":"%s"}', product, user, token)
            requests[#requests + 1] = wrk.format("POST", "/api/v1/buy", headers, body)
        end
        i = i + 1
    end
    next_request = 1
end

function request()
    local r = requests[next_request]
    next_request = next_request % #requests + 1
    return r
end

-- No response() callback: it would run Lua for every answer and slow wrk down on a shared
-- machine. bench.sh counts the answers by code from the server's /metrics instead.
function done(summary, latency, requests)
    io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
