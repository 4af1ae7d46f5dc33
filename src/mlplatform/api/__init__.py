"""HTTP layer: routers, error mapping, the request pipeline, actuator and the Open Inference Protocol."""
