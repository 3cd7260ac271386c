"""The validated bodies of the mutating REST calls, built from JSON by named constructors.

Owns `ProvisionRequest`, `DeploymentRequest` (with its `Component`s), `ConfigurationRequest`,
`SecretBindingRequest` (secret names and Key Vault references only: a body that carries a secret
value is refused, and the value is never repeated), `RotationRequest` and `ScalingRequest`
(min <= max, percentages in range, scale-to-zero rules). Each error is an InvalidArgument that
names the field. Checks here need no state; checks against the state are in `state.py`.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..seed import (
    COMPUTE_TARGETS,
    ENVIRONMENT_ID_PATTERN,
    ID_PATTERN,
    ISOLATION_MODELS,
    STAGES,
)
from .errors import InvalidArgument

STRATEGIES = ("RollingHealthGated", "BlueGreen", "Canary")
METRICS = ("cpu", "memory", "http-requests", "queue-length")
# Targets that can run zero replicas (serverless hosting); AKS and App Service keep one.
SCALE_TO_ZERO_TARGETS = ("container-apps", "functions")
MAX_REPLICAS = 1000
MAX_COMPONENTS = 100
MAX_SETTINGS = 500
MAX_SECRETS = 100
# registry/name:tag (a registry port is allowed; the tag is what follows the last colon).
IMAGE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/:-]{0,254}:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
KEY_VAULT_REF = re.compile(
    r"^https://[a-z0-9][a-z0-9-]{1,22}[a-z0-9]\.vault\.azure\.net/secrets/[A-Za-z0-9-]{1,127}(/[0-9a-f]{32})?$"
)
SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Fields that would carry a secret's value: refused, never stored, never echoed.
VALUE_FIELDS = ("value", "secretValue", "plainText", "password")


def _object(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise InvalidArgument("InvalidRequest", "The request body must be a JSON object.")
    return data


def _text(data: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = data.get(key)
    if value is None:
        if default is not None:
            return default
        raise InvalidArgument("InvalidRequest", f"{key} is required.", {"field": key})
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(
            "InvalidRequest", f"{key} must be a non-empty string.", {"field": key}
        )
    if len(value) > 256:
        raise InvalidArgument(
            "InvalidRequest", f"{key} is longer than 256 characters.", {"field": key}
        )
    return value


def _ident(data: Mapping[str, Any], key: str, pattern: re.Pattern[str] = ID_PATTERN) -> str:
    text = _text(data, key)
    if not pattern.fullmatch(text):
        raise InvalidArgument(
            "InvalidRequest", f"{key} {text!r} is not a valid identifier.", {"field": key}
        )
    return text


def _choice(
    data: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str | None = None
) -> str:
    text = _text(data, key, default=default)
    if text not in choices:
        raise InvalidArgument(
            "InvalidRequest",
            f"{key} must be one of {', '.join(choices)}; got {text!r}.",
            {"field": key},
        )
    return text


def _int(data: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("InvalidRequest", f"{key} must be an integer.", {"field": key})
    if not minimum <= value <= maximum:
        raise InvalidArgument(
            "InvalidRequest",
            f"{key} must be between {minimum} and {maximum}; got {value}.",
            {"field": key},
        )
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument("InvalidRequest", f"{key} must be true or false.", {"field": key})
    return value


def _list(data: Mapping[str, Any], key: str, *, limit: int) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise InvalidArgument("InvalidRequest", f"{key} must be a non-empty list.", {"field": key})
    if len(value) > limit:
        raise InvalidArgument(
            "InvalidRequest", f"{key} has more than {limit} entries.", {"field": key}
        )
    return value


def image_tag(image: str) -> str:
    """The version part of `registry/name:tag` (what drift findings compare)."""
    return image.rsplit(":", 1)[1]


def with_tag(image: str, tag: str) -> str:
    return f"{image.rsplit(':', 1)[0]}:{tag}"


@attrs.frozen
class ProvisionRequest:
    tenant_id: str
    project_id: str
    name: str
    stage: str
    region: str
    isolation_model: str
    compute_targets: tuple[str, ...]

    @classmethod
    def from_json(cls, body: Any) -> ProvisionRequest:
        data = _object(body)
        targets = _list(data, "computeTargets", limit=len(COMPUTE_TARGETS))
        for target in targets:
            if target not in COMPUTE_TARGETS:
                raise InvalidArgument(
                    "InvalidRequest",
                    f"computeTargets must be among {', '.join(COMPUTE_TARGETS)}; got {target!r}.",
                    {"field": "computeTargets"},
                )
        return cls(
            tenant_id=_ident(data, "tenantId"),
            project_id=_ident(data, "projectId"),
            name=_ident(data, "name"),
            stage=_choice(data, "stage", STAGES),
            region=_ident(data, "region"),
            isolation_model=_choice(data, "isolationModel", ISOLATION_MODELS, "pool"),
            compute_targets=tuple(dict.fromkeys(targets)),
        )


@attrs.frozen
class Component:
    module_id: str
    image: str
    target: str


@attrs.frozen
class DeploymentRequest:
    tenant_id: str
    environment_id: str
    release_ref: str
    components: tuple[Component, ...]
    configuration_id: str | None
    strategy: str

    @classmethod
    def from_json(cls, body: Any) -> DeploymentRequest:
        data = _object(body)
        components = []
        for index, item in enumerate(_list(data, "components", limit=MAX_COMPONENTS)):
            if not isinstance(item, dict):
                raise InvalidArgument(
                    "InvalidRequest",
                    f"components[{index}] must be an object.",
                    {"field": "components"},
                )
            image = _text(item, "image")
            if not IMAGE_PATTERN.fullmatch(image):
                raise InvalidArgument(
                    "InvalidRequest",
                    f"components[{index}].image must be registry/name:tag; got {image!r}.",
                    {"field": "components"},
                )
            components.append(
                Component(
                    module_id=_ident(item, "moduleId"),
                    image=image,
                    target=_choice(item, "target", COMPUTE_TARGETS),
                )
            )
        modules = [c.module_id for c in components]
        if len(set(modules)) != len(modules):
            raise InvalidArgument(
                "InvalidRequest", "components name a moduleId twice.", {"field": "components"}
            )
        configuration = data.get("configurationId")
        return cls(
            tenant_id=_ident(data, "tenantId"),
            environment_id=_ident(data, "environmentId", ENVIRONMENT_ID_PATTERN),
            release_ref=_ident(data, "releaseRef"),
            components=tuple(components),
            configuration_id=None if configuration is None else _ident(data, "configurationId"),
            strategy=_choice(data, "strategy", STRATEGIES, "RollingHealthGated"),
        )


@attrs.frozen
class ConfigurationRequest:
    tenant_id: str
    environment_id: str
    name: str
    # Plain settings (strings, numbers, booleans); a published version never changes.
    settings: Mapping[str, str | int | float | bool]

    @classmethod
    def from_json(cls, body: Any) -> ConfigurationRequest:
        data = _object(body)
        settings = data.get("settings", {})
        if not isinstance(settings, dict) or len(settings) > MAX_SETTINGS:
            raise InvalidArgument(
                "InvalidRequest",
                f"settings must be an object with at most {MAX_SETTINGS} entries.",
                {"field": "settings"},
            )
        for key, value in settings.items():
            if not SECRET_NAME.fullmatch(key) or not isinstance(value, str | int | float | bool):
                raise InvalidArgument(
                    "InvalidRequest",
                    f"settings.{key[:64]} must be a string, number or boolean under a plain key.",
                    {"field": "settings"},
                )
        return cls(
            tenant_id=_ident(data, "tenantId"),
            environment_id=_ident(data, "environmentId", ENVIRONMENT_ID_PATTERN),
            name=_ident(data, "name"),
            settings=dict(settings),
        )


@attrs.frozen
class SecretReference:
    name: str
    key_vault_ref: str


@attrs.frozen
class SecretBindingRequest:
    tenant_id: str
    environment_id: str
    service_id: str
    secrets: tuple[SecretReference, ...]

    @classmethod
    def from_json(cls, body: Any) -> SecretBindingRequest:
        data = _object(body)
        secrets = []
        for index, item in enumerate(_list(data, "secrets", limit=MAX_SECRETS)):
            if not isinstance(item, dict):
                raise InvalidArgument(
                    "InvalidRequest", f"secrets[{index}] must be an object.", {"field": "secrets"}
                )
            for field in VALUE_FIELDS:
                if field in item:
                    # Say which field, never what it held.
                    raise InvalidArgument(
                        "SecretValueRefused",
                        f"secrets[{index}].{field}: secret values are never accepted; "
                        "bind a Key Vault reference (keyVaultRef) instead.",
                        {"field": "secrets"},
                    )
            name = _text(item, "name")
            ref = _text(item, "keyVaultRef")
            if not SECRET_NAME.fullmatch(name):
                raise InvalidArgument(
                    "InvalidRequest",
                    f"secrets[{index}].name is not a valid name.",
                    {"field": "secrets"},
                )
            if not KEY_VAULT_REF.fullmatch(ref):
                raise InvalidArgument(
                    "InvalidRequest",
                    f"secrets[{index}].keyVaultRef must be "
                    "https://<vault>.vault.azure.net/secrets/<name>[/<version>].",
                    {"field": "secrets"},
                )
            secrets.append(SecretReference(name, ref))
        names = [s.name for s in secrets]
        if len(set(names)) != len(names):
            raise InvalidArgument(
                "InvalidRequest", "secrets name a secret twice.", {"field": "secrets"}
            )
        return cls(
            tenant_id=_ident(data, "tenantId"),
            environment_id=_ident(data, "environmentId", ENVIRONMENT_ID_PATTERN),
            service_id=_ident(data, "serviceId"),
            secrets=tuple(secrets),
        )


@attrs.frozen
class RotationRequest:
    # None: every secret of the binding.
    secret_name: str | None

    @classmethod
    def from_json(cls, body: Any) -> RotationRequest:
        data = _object({} if body is None else body)
        name = data.get("secretName")
        return cls(None if name is None else _text(data, "secretName"))


@attrs.frozen
class ScalingRequest:
    tenant_id: str
    environment_id: str
    service_id: str
    target: str
    metric: str
    min_replicas: int
    max_replicas: int
    target_utilization_percent: int
    scale_to_zero: bool

    @classmethod
    def from_json(cls, body: Any) -> ScalingRequest:
        data = _object(body)
        target = _choice(data, "target", COMPUTE_TARGETS)
        low = _int(data, "minReplicas", minimum=0, maximum=MAX_REPLICAS)
        high = _int(data, "maxReplicas", minimum=1, maximum=MAX_REPLICAS)
        percent = _int(data, "targetUtilizationPercent", minimum=1, maximum=100)
        to_zero = _bool(data, "scaleToZero", False)
        if low > high:
            raise InvalidArgument(
                "InvalidScalingPolicy",
                f"minReplicas ({low}) must not exceed maxReplicas ({high}).",
                {"field": "minReplicas"},
            )
        if to_zero and target not in SCALE_TO_ZERO_TARGETS:
            raise InvalidArgument(
                "InvalidScalingPolicy",
                f"scaleToZero is only possible on {' and '.join(SCALE_TO_ZERO_TARGETS)}, "
                f"not {target}.",
                {"field": "scaleToZero"},
            )
        if to_zero and low != 0:
            raise InvalidArgument(
                "InvalidScalingPolicy",
                "scaleToZero needs minReplicas 0.",
                {"field": "minReplicas"},
            )
        if not to_zero and low == 0:
            raise InvalidArgument(
                "InvalidScalingPolicy",
                "minReplicas 0 needs scaleToZero true.",
                {"field": "scaleToZero"},
            )
        return cls(
            tenant_id=_ident(data, "tenantId"),
            environment_id=_ident(data, "environmentId", ENVIRONMENT_ID_PATTERN),
            service_id=_ident(data, "serviceId"),
            target=target,
            metric=_choice(data, "metric", METRICS),
            min_replicas=low,
            max_replicas=high,
            target_utilization_percent=percent,
            scale_to_zero=to_zero,
        )
