-- mlplatform batch prediction: POST /api/ml/predict/batch.  Arguments after `--`: bodies file, offset, API key.
local here = string.match(string.sub(debug.getinfo(1, "S").source, 2), "^(.*/)") or "./"
local common = dofile(here .. "common.lua")

common.install(function(args)
  return "/api/ml/predict/batch", { ["X-API-Key"] = assert(args[3], "missing API key argument") }
end)
