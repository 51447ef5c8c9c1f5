-- wrk script used by bench/wrk.py: every request takes the next line of a file.
--
-- A line is `COOKIE`, `COOKIE<TAB>BODY` or `COOKIE<TAB>BODY<TAB>HEADERS` (HEADERS: `Name:
-- value` pairs separated by `|`, for this request only; BODY may then be empty). Rotation needs a refresh token that is fresh
-- for every request (presenting one twice would be reuse and revoke the session), so
-- the bench writes one line per request it may send, and this script never wraps around:
-- past the last line it counts an overflow and sends the last line's cookie-less twin
-- (no cookie at all), which bench/wrk.py reports as a broken measurement.
--
-- Settings come from the environment: BENCH_LINES (the file), BENCH_METHOD (GET or
-- POST), BENCH_HEADERS (extra `Name: value` pairs separated by `|`), BENCH_CYCLE (1:
-- start over after the last line, for lines that may be replayed, such as access tokens).

local path = os.getenv("BENCH_LINES")
local method = os.getenv("BENCH_METHOD") or "GET"
local extra = os.getenv("BENCH_HEADERS") or ""
local cycle = os.getenv("BENCH_CYCLE") == "1"

local function parse_headers(text, into)
  for pair in text:gmatch("[^|]+") do
    local name, value = pair:match("^%s*([^:]+):%s*(.*)$")
    if name then
      into[name] = value
    end
  end
  return into
end

local cookies, bodies, line_headers = {}, {}, {}
for line in io.lines(path) do
  local cookie, body, own = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
  if cookie == nil then
    cookie, body = line:match("^([^\t]*)\t(.*)$")
    if cookie == nil then
      cookie, body = line, nil
    end
  elseif body == "" then
    body = nil
  end
  cookies[#cookies + 1] = cookie
  bodies[#bodies + 1] = body
  line_headers[#line_headers + 1] = own
end

local base_headers = parse_headers(extra, {})

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

local next_line = 0
overflow = 0
-- wrk calls request() once before the run, to check that it builds a valid request, and
-- never sends that one. Answer that call without taking a line, or line 1 is lost and
-- a rotation run later presents a counter the server never reached (401, as it should).
local checked = false

function request()
  if not checked then
    checked = true
    return wrk.format(method, nil, base_headers, nil)
  end
  next_line = next_line + 1
  if cycle and next_line > #cookies then
    next_line = 1
  end
  local headers = {}
  for name, value in pairs(base_headers) do
    headers[name] = value
  end
  local body = nil
  if next_line <= #cookies then
    if cookies[next_line] ~= "" then
      headers["Cookie"] = cookies[next_line]
    end
    if line_headers[next_line] ~= nil then
      parse_headers(line_headers[next_line], headers)
    end
    body = bodies[next_line]
  else
    overflow = overflow + 1
  end
  if body ~= nil then
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  return wrk.format(method, nil, headers, body)
end

function done(summary, latency, requests)
  local overflowed = 0
  for _, thread in ipairs(threads) do
    overflowed = overflowed + (thread:get("overflow") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, "overflow": %d, '
      .. '"latency_p50_us": %d, "latency_p90_us": %d, "latency_p99_us": %d, "latency_min_us": %d, "latency_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, overflowed, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.min, latency.max))
end
