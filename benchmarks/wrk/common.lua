-- Shared by the request scripts: load request bodies, make each request's input unique, report JSON.
--
-- A bodies file holds one request body per line. Each row's last DIGITS features end in "@@", and each
-- request replaces those markers with the digits of its own sequence number: a 5th decimal (a change below
-- 1e-4, still distinct in float32), so no two requests in a run, or across runs given distinct offsets,
-- carry the same input and no prediction cache answers from memory. Both servers get the same scheme.

local common = {}
local DIGITS = 7 -- markers per row: must match UNIQUE_DIGITS in benchmarks/serving.py
local STRIDE = 8 -- sequence numbers: offset + counter * STRIDE + thread number (at most 8 threads)

local function split(text, marker)
  local pieces, start = {}, 1
  while true do
    local at = string.find(text, marker, start, true)
    if not at then
      pieces[#pieces + 1] = string.sub(text, start)
      return pieces
    end
    pieces[#pieces + 1] = string.sub(text, start, at - 1)
    start = at + #marker
  end
end

local function load_bodies(path)
  local file = assert(io.open(path, "rb"), "cannot open bodies file " .. tostring(path))
  local bodies = {}
  for line in file:lines() do
    if #line > 0 then
      bodies[#bodies + 1] = split(line, "@@")
    end
  end
  file:close()
  assert(#bodies > 0, "no bodies in " .. path)
  return bodies
end

-- The body with its markers replaced by the digits of `number`, written into the reusable table `out`.
local function fill(pieces, number, out, digits)
  local text = string.format("%0" .. DIGITS .. "d", number % 10 ^ DIGITS)
  for d = 1, DIGITS do
    digits[d] = string.sub(text, d, d)
  end
  local count = #pieces
  for i = 1, count - 1 do
    out[2 * i - 1] = pieces[i]
    out[2 * i] = digits[(i - 1) % DIGITS + 1]
  end
  out[2 * count - 1] = pieces[count]
  return table.concat(out, "", 1, 2 * count - 1)
end

local function report(summary, latency)
  local e = summary.errors
  local p = {}
  for _, q in ipairs({ 50, 90, 95, 99, 99.9 }) do
    p[#p + 1] = string.format('"p%s": %d', tostring(q), latency:percentile(q))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "stdev": %.1f, %s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(p, ", ")
  ))
end

-- Installs wrk's callbacks. `target(args)` returns the request path and headers. wrk passes what follows
-- `--` on its command line as args[1], args[2], ...: the bodies file, the sequence offset, then the
-- script's own arguments (args[3] on).
function common.install(target)
  local threads = 0
  local bodies, path, headers, offset
  local counter, out, digits = 0, {}, {}

  function setup(thread)
    threads = threads + 1
    thread:set("thread_number", threads)
  end

  function init(args)
    bodies = load_bodies(assert(args[1], "usage: wrk ... <url> -- <bodies file> <offset> ..."))
    offset = assert(tonumber(args[2]), "the second script argument is the sequence offset")
    path, headers = target(args)
    headers["Content-Type"] = "application/json"
  end

  function request()
    counter = counter + 1
    local number = offset + counter * STRIDE + (thread_number or 0)
    local body = fill(bodies[counter % #bodies + 1], number, out, digits)
    return wrk.format("POST", path, headers, body)
  end

  function done(summary, latency, requests)
    report(summary, latency)
  end
end

return common
