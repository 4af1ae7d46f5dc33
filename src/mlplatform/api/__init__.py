"""HTTP layer: routers, error mapping, middleware, actuator and the Open Inference Protocol."""
