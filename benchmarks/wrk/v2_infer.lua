-- Open Inference Protocol V2: POST /v2/models/{name}/infer with one FP32 tensor, [1, 30] or [1000, 30] (the
-- bodies file decides).  Arguments after `--`: bodies file, offset, model name, and an API key (mlplatform)
-- or nothing (MLServer).
local here = string.match(string.sub(debug.getinfo(1, "S").source, 2), "^(.*/)") or "./"
local common = dofile(here .. "common.lua")

common.install(function(args)
  local headers = {}
  if args[4] then
    headers["X-API-Key"] = args[4]
  end
  return "/v2/models/" .. assert(args[3], "missing model name argument") .. "/infer", headers
end)
