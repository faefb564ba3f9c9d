"""Extra checks for run.sh (loaded through SCHEMATHESIS_HOOKS).

The OpenAPI document promises the error shape; these check what the shape
cannot say: a refused request names the field that was wrong.
"""

import schemathesis

# Codes about the body or request as a whole, which name no field.
WHOLE_REQUEST = {"invalid_json", "bad_body", "unauthorized", "unsupported_media_type", "body_too_large"}

# A schema-valid job may still be refused for a rule the schema does not hold
# (see the JobRequest description); these are the fields those rules name.
# Codec rules (presets, AV1's minimum size, containers, RTMP) are in the
# schema, so a refusal naming `preset`, `width` or `height` is a finding.
NOT_IN_SCHEMA = {
    "bitrate",  # the range of "2500k"-style strings
    "input.path",  # control characters, `..`, media roots, existence
    "output.path",  # the same, and not the input
    "output.url",  # a host, no whitespace
    "parameters.bitrate",  # POST /jobs (the Go-seed alias): as `bitrate`
}


def _error(response):
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any undecodable body is the failure
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r}")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(f"{response.status_code} without an `error` object: {body!r}"[:300])
    return error


def _is_integral_float(body, field):
    """Whether the body's value at the dotted `field` is a float like 640.0."""
    if not isinstance(field, str):
        return False
    value = body
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return isinstance(value, float) and value.is_integer()


@schemathesis.check
def refusals_name_the_field(ctx, response, case):
    """Every 4xx is the JSON error shape; a 400 names its field unless the
    whole request is at fault."""
    if not 400 <= response.status_code < 500:
        return None
    if case.path == "/v1/jobs/{id}/events" and response.status_code == 200:
        return None
    error = _error(response)
    code = error.get("code")
    if response.status_code == 400 and code not in WHOLE_REQUEST and not error.get("field"):
        raise AssertionError(f"400 `{code}` names no field: {error.get('message')!r}")
    return None


@schemathesis.check
def schema_valid_jobs_are_refused_only_for_cross_field_rules(ctx, response, case):
    """A POST /v1/jobs (or /jobs) body the schema allows is either stored
    (201) or refused for a rule the schema cannot hold, naming that rule's
    field."""
    if (
        case.method.upper() != "POST"
        or case.path not in ("/v1/jobs", "/jobs")
        or response.status_code != 400
    ):
        return None
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    error = _error(response)
    field = error.get("field")
    if _is_integral_float(case.body, field):
        # `640.0` for an integer field: refused on purpose (the job request
        # schema's description says so), but JSON Schema cannot say it.
        return None
    if field not in NOT_IN_SCHEMA:
        raise AssertionError(
            f"a schema-valid job was refused for `{error.get('field')}` "
            f"({error.get('code')}: {error.get('message')!r}), which the schema should rule out"
        )
    return None
