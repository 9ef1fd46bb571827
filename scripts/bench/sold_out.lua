-- wrk script: POST /api/v1/buy for a sold-out product (answered from the local cache).
-- Usage: PRODUCT=2 wrk -t2 -c100 -d10s -s scripts/bench/sold_out.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/api/v1/buy"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"product_id":%s,"user_id":"u1","quantity":1,"token":"1.x"}', os.getenv("PRODUCT") or "2")

function done(summary, latency, requests)
    io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
