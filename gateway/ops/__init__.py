"""The gateway's operational endpoints: health and readiness, the OpenAPI document, the browser
module. They look at everything below them and nothing imports them but the app."""
