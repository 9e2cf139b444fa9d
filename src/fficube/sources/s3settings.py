"""S3 settings, resolved once per build the way the AWS tools resolve them.

Two clients talk to S3 in a build: s3fs (listing, existence checks, the cube's upload)
and obstore (the ranged reads of inputs, :mod:`fficube.sources.obstore`).  Each can read the
environment on its own, and they do not read it alike: obstore takes
``AWS_ENDPOINT_URL`` but not the path-style addressing and plain HTTP that such an
endpoint needs, and knows nothing of ``~/.aws/config``'s profiles.  So the settings
are resolved once, here, with botocore's own chain, and handed to both:

=================  ========================================================================
setting            where it comes from, first found wins
=================  ========================================================================
endpoint           storage option ``endpoint_url`` (or ``client_kwargs``); then, unless
                   ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, ``AWS_ENDPOINT_URL_S3``,
                   ``AWS_ENDPOINT_URL``, the profile's ``services`` section, the profile's
                   ``endpoint_url``; none: AWS itself
region             ``client_kwargs={"region_name": ...}`` (``--storage-option
                   region_name=...``); ``AWS_REGION``; ``AWS_DEFAULT_REGION``; the profile's
                   ``region``.  On AWS the bucket's own region wins (one HEAD per bucket)
credentials        ``anon``: none; ``key``/``secret``/``token``; else botocore's chain:
                   environment, shared credentials file, config file, SSO, container and
                   instance roles (refreshed by botocore as they expire)
profile            storage option ``profile``; else ``AWS_PROFILE``
requester pays     storage option ``requester_pays``
=================  ========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError

__all__ = ["S3Settings", "resolve_s3_settings", "explicit_endpoint", "OBSTORE_ENDPOINT_VARIABLES"]

#: Environment variables obstore reads an endpoint from by itself (botocore reads the
#: last two, and not the first).
OBSTORE_ENDPOINT_VARIABLES = ("AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach S3 and sign for it: one resolution, handed to s3fs and obstore alike."""

    #: A custom endpoint (MinIO, Ceph, LocalStack, moto...); None for AWS itself.
    endpoint_url: str | None = None
    #: Where :attr:`endpoint_url` was found (for messages): a storage option, a variable, a profile.
    endpoint_from: str = ""
    #: The configured region (None: none configured).
    region: str | None = None
    anonymous: bool = False
    requester_pays: bool = False
    profile: str | None = None
    #: Credentials the storage options give outright (key, secret, token).
    static_credentials: tuple[str, str, str | None] | None = None
    #: botocore's credentials from its chain (refreshable), when signed and not static; None
    #: if the chain found none.
    credentials: Any = None

    @property
    def signed(self) -> bool:
        """Whether requests are signed with credentials the chain found (not static, not anonymous)."""
        return not self.anonymous and self.static_credentials is None


def explicit_endpoint(options: Mapping[str, Any]) -> str | None:
    """The endpoint the storage options name outright (``endpoint_url``, also in ``client_kwargs``)."""
    client_kwargs = options.get("client_kwargs") or {}
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    return str(endpoint) if endpoint else None


def _configured_endpoint(session: Any) -> tuple[str | None, str]:
    """The endpoint botocore's configuration names for S3 (its own provider, so that its
    order and its opt-out hold), and where it was found."""
    from botocore.configprovider import ConfiguredEndpointProvider

    if session.get_config_variable("ignore_configured_endpoint_urls"):
        return None, ""
    provider = ConfiguredEndpointProvider(full_config=session.full_config, scoped_config=session.get_scoped_config(),
                                          client_name="s3")
    endpoint = provider.provide()
    if not endpoint:
        return None, ""
    variable = next((v for v in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") if os.environ.get(v) == endpoint), None)
    return str(endpoint), variable or f"profile {session.profile or 'default'!r}"


def resolve_s3_settings(options: Mapping[str, Any]) -> S3Settings:
    """The S3 settings that s3fs ``options`` and the AWS configuration give (blocking: reads files).

    Parameters
    ----------
    options
        The filesystem's storage options (``anon``, ``endpoint_url``, ``profile``,
        ``key``/``secret``/``token``, ``requester_pays``, ``client_kwargs``).

    Raises
    ------
    OptionError
        If the profile named (by ``profile`` or ``AWS_PROFILE``) is in no config or
        credentials file.
    """
    import botocore.exceptions
    import botocore.session

    anonymous = bool(options.get("anon"))
    profile = options.get("profile")
    client_kwargs = options.get("client_kwargs") or {}
    static = None
    if options.get("key") and options.get("secret"):
        static = (str(options["key"]), str(options["secret"]), str(options["token"]) if options.get("token") else None)
    try:
        session = botocore.session.Session(profile=str(profile) if profile else None)
        endpoint, endpoint_from = explicit_endpoint(options), "storage option endpoint_url"
        if endpoint is None:
            endpoint, endpoint_from = _configured_endpoint(session)
        region = (client_kwargs.get("region_name") or os.environ.get("AWS_REGION")
                  or session.get_config_variable("region"))
        credentials = None if anonymous or static else session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        name = profile or os.environ.get("AWS_PROFILE")
        raise OptionError("storage_options", f"S3 profile {name!r} is in no AWS config or credentials file "
                          f"(AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, ~/.aws)") from exc
    return S3Settings(
        endpoint_url=endpoint, endpoint_from=endpoint_from if endpoint else "", region=str(region) if region else None,
        anonymous=anonymous, requester_pays=bool(options.get("requester_pays")),
        profile=str(profile) if profile else None, static_credentials=static, credentials=credentials,
    )
