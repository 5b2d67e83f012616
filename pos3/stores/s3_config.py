"""Where an S3 profile's requests go and how they are signed, resolved without botocore.

Importing boto3 and building a client costs ~0.3 s a process, which is most of a no-op sync. When
the configuration is plain enough that botocore would resolve it exactly this way, `native_config`
resolves it here and the CRT client (`s3_crt`) sends the requests; otherwise it returns None and
the store takes everything from botocore's chain, as before. The rule:

* ``aws_profile`` given: botocore (named profiles, SSO, ``credential_process``, assumed roles).
* An isolated profile (``endpoint``, keys or ``public``, no ``aws_profile``): endpoint and region
  from the profile only (region ``us-east-1`` when unset, as botocore signs); credentials: none for
  ``public``, else the profile's keys, else ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
  (``AWS_SESSION_TOKEN``) exactly as botocore's isolated session reads them. No other variable
  or file is read. Env keys with ``AWS_CREDENTIAL_EXPIRATION`` (refreshable) go to botocore.
* Any other profile reads the ambient chain natively only when it is all in the environment: no
  AWS config file (``AWS_CONFIG_FILE``, else ``~/.aws/config``) exists, every ``AWS_*`` variable
  is one of `AMBIENT`, and both keys are set (so botocore would never reach the credentials
  file, SSO, containers or the instance metadata). Endpoint: ``AWS_ENDPOINT_URL_S3``, else
  ``AWS_ENDPOINT_URL``; region: ``AWS_DEFAULT_REGION`` (botocore ignores ``AWS_REGION``).
* Bucket URLs (`NativeConfig.bucket_base`): a custom endpoint with ``addressing_style``
  ``auto``/``path`` is addressed path-style (``{endpoint}/{bucket}/``), as botocore does; AWS
  itself virtual-hosted (``{bucket}.s3.{region}.amazonaws.com``, ``{bucket}.s3.amazonaws.com``
  in us-east-1) for DNS-safe bucket names in the ``aws`` partition. Anything else (virtual style
  on a custom endpoint, dotted names, other partitions) is derived by botocore.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: Ambient variables read natively; any other ``AWS_*`` variable leaves the chain to botocore.
AMBIENT = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_PAGER",
        "AWS_DEFAULT_OUTPUT",
        "AWS_CA_BUNDLE",
    }
)
#: Regions of the ``aws`` partition (botocore's ``regionRegex``).
AWS_REGION = re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+$")
#: Bucket names botocore puts in the host name on AWS.
VIRTUAL_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
#: Bucket names botocore accepts and puts in a path unescaped.
PATH_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
DEFAULT_REGION = "us-east-1"

#: (access key, secret key, session token).
Credentials = tuple[str, str, str | None]


@dataclass(frozen=True)
class NativeConfig:
    """Endpoint, signing region and credentials (None: unsigned) resolved without botocore."""

    endpoint: str | None
    region: str
    credentials: Credentials | None
    addressing: str = "auto"
    #: The CA bundle to trust instead of the system's: the ``ca_bundle`` option, else (not isolated)
    #: ``AWS_CA_BUNDLE``, as botocore would.
    ca_bundle: str | None = None

    @property
    def https(self) -> bool:
        return self.endpoint is None or urlsplit(self.endpoint).scheme == "https"

    def bucket_base(self, bucket: str) -> tuple[str, str] | None:
        """(host, path ending in '/') of ``bucket``'s objects as botocore addresses them, or None
        when only botocore knows (see the module's rule)."""
        if self.endpoint is not None:
            if self.addressing not in ("auto", "path") or not PATH_BUCKET.match(bucket):
                return None
            url = urlsplit(self.endpoint)
            return url.netloc, f"{url.path.rstrip('/')}/{bucket}/"
        if self.addressing == "path" or not AWS_REGION.match(self.region) or not VIRTUAL_BUCKET.match(bucket):
            return None
        if self.region == DEFAULT_REGION:
            return f"{bucket}.s3.amazonaws.com", "/"
        return f"{bucket}.s3.{self.region}.amazonaws.com", "/"


def native_config(
    endpoint: str | None,
    region: str | None,
    public: bool,
    options: Mapping[str, object],
    isolated: bool,
    environ: Mapping[str, str] | None = None,
) -> NativeConfig | None:
    """The configuration botocore would resolve for these profile fields and S3 ``options``
    (``access_key_id``... as `pos3.profiles.Profile` holds them), or None if only botocore can."""
    env = os.environ if environ is None else environ
    if "aws_profile" in options:
        return None
    addressing = str(options.get("addressing_style", "auto"))
    keys = _keys(options)
    ca_bundle = os.path.expanduser(str(options["ca_bundle"])) if options.get("ca_bundle") else None
    if endpoint is not None and not _plain_url(endpoint):
        return None
    if isolated:
        if public:
            creds = None
        elif keys is not None:
            creds = keys
        else:
            if env.get("AWS_CREDENTIAL_EXPIRATION") or env.get("AWS_SECURITY_TOKEN"):
                return None
            creds = _env_keys(env)
            if creds is None:
                return None  # botocore reports the missing or partial keys
        return NativeConfig(endpoint, region or DEFAULT_REGION, creds, addressing, ca_bundle)
    if any(k.startswith("AWS_") and k not in AMBIENT for k in env):
        return None
    config_file = Path(env.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()
    if config_file.exists():
        return None
    creds = _env_keys(env)
    if creds is None:
        return None
    ambient = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if ambient is not None and not _plain_url(ambient):
        return None
    region = region or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return NativeConfig(ambient, region, creds, addressing, ca_bundle or env.get("AWS_CA_BUNDLE") or None)


def _plain_url(url: str) -> bool:
    """An http(s) URL with a host and nothing botocore might treat specially (query, fragment)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query and not parts.fragment


def _keys(options: Mapping[str, object]) -> Credentials | None:
    if "access_key_id" not in options:
        return None
    token = options.get("session_token")
    return str(options["access_key_id"]), str(options["secret_access_key"]), str(token) if token else None


def _env_keys(env: Mapping[str, str]) -> Credentials | None:
    """Both keys from the environment (with ``AWS_SESSION_TOKEN``), or None if either is missing."""
    access, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access or not secret:
        return None
    return access, secret, env.get("AWS_SESSION_TOKEN") or None
