-- wrk script for bench/serve_bench.py: POSTs one fixed JSON body, read from the file named by the
-- script's first argument (`wrk ... URL -- BODY_FILE`), and prints one line of JSON at the end:
-- requests, duration and the p50/p99 latency (microseconds), and wrk's error counts (`status`
-- counts the responses with a status above 399).

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, ' ..
      '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect, e.read, e.write, e.status, e.timeout))
end
