"""One typed settings object, read from `CXR_*` environment variables and `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError as SourceError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from worker.accelerator import Precision, Xla
from worker.imaging.options import DEFAULT_CHEST_BODY_PARTS
from worker.pacs.aet import check_ae_title, parse_destination
from worker.pipeline.backbones import BACKBONE_NAMES, find_backbone, read_base_weights

SUPPORTED_DATABASES = ("sqlite", "postgresql")
SUPPORTED_BROKERS = ("sqla+sqlite", "redis", "rediss", "amqp", "pyamqp")
# Shorter HMAC keys can be guessed; 32 bytes is SHA-256's block-size sweet spot (RFC 2104).
MIN_PSEUDONYM_KEY_BYTES = 32
# A shared password shorter than this is guessed by trying (CXR_WEB_PASSWORD).
MIN_WEB_PASSWORD_CHARS = 12
# Which screened images get a heatmap (CXR_HEATMAPS).
HeatmapMode = Literal["flagged", "all", "off"]


def _long_enough_key(value: SecretStr | None) -> SecretStr | None:
    """A secret key of at least `MIN_PSEUDONYM_KEY_BYTES` bytes, or None (unset)."""
    if value is None:
        return None
    size = len(value.get_secret_value().encode("utf-8"))
    if size < MIN_PSEUDONYM_KEY_BYTES:
        raise ValueError(
            f"the key is {size} bytes, shorter than {MIN_PSEUDONYM_KEY_BYTES}; set a "
            "random secret such as the output of `openssl rand -hex 32`, or unset it "
            "to use the key generated under var/"
        )
    return value


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


class _Group(BaseSettings):
    """One subsystem's settings, read from the same `CXR_*` variables as ever."""

    model_config = SettingsConfigDict(
        env_prefix="CXR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )


class StorageSettings(_Group):
    """Where results, the broker, scans and models live."""

    database_url: str = Field(
        "sqlite:///var/cxr-screen.db",
        description="SQLAlchemy URL of the results database (sqlite:///... or "
        "postgresql+psycopg://user:pass@host/db).",
    )

    broker_url: str = Field(
        "sqla+sqlite:///var/broker.db",
        description="Celery broker: embedded sqla+sqlite:///..., redis://host:6379/0 or amqp://.",
    )

    inbox: Path = Field(Path("inbox"), description="Watched folder where scans are dropped.")

    archive: Path = Field(Path("archive"), description="Screened files are moved here.")

    quarantine: Path = Field(
        Path("quarantine"), description="Rejected/failed files are moved here with a reason."
    )

    model_dir: Path = Field(Path("models"), description="Model artifacts and the registry.")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(
                # Never the value itself: it may carry a password.
                "the value is not a database URL; use sqlite:///path/to.db or "
                "postgresql+psycopg://user:password@host:5432/dbname"
            ) from exc
        if url.get_backend_name() not in SUPPORTED_DATABASES:
            raise ValueError(
                f"database {url.get_backend_name()!r} is not supported; use sqlite:///... or "
                "postgresql+psycopg://..."
            )
        if url.get_backend_name() == "postgresql" and url.get_driver_name() not in (
            "psycopg",
            "psycopg2",
        ):
            raise ValueError(
                f"PostgreSQL driver {url.get_driver_name()!r} is not installed; "
                "write postgresql+psycopg://..."
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in SUPPORTED_BROKERS:
            # Never the URL itself: it may carry a password.
            named = f"scheme {scheme!r}" if scheme else "a URL without a scheme://"
            raise ValueError(
                f"{named} is not a supported broker; use sqla+sqlite:///var/broker.db "
                "(embedded), redis://host:6379/0 or amqp://user:pass@host:5672//"
            )
        return value

    @property
    def var_dir(self) -> Path:
        """Where embedded state lives (SQLite files, generated keys)."""
        return Path("var")


class DecoderSettings(_Group):
    """What the decoder accepts, and the key of pseudonymous patient references."""

    pseudonym_key: SecretStr | None = Field(
        None,
        description="Secret key for pseudonymous patient references (HMAC of Patient ID); "
        "generated under var/ when unset.",
    )

    max_file_mb: Annotated[float, Field(gt=0)] = Field(
        512.0, description="Files larger than this are rejected unread."
    )

    max_pixels: Annotated[int, Field(gt=0)] = Field(
        80_000_000,
        description="Decoded value cap per image: rows x columns x samples x frames "
        "(decompression-bomb guard, checked before decoding).",
    )
    # NoDecode: a comma-separated list in the environment, not JSON.

    chest_body_parts: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_CHEST_BODY_PARTS,
        description="DICOM Body Part Examined values taken as chest; other explicit values "
        "are rejected (comma-separated). An absent body part is accepted.",
    )

    @field_validator("pseudonym_key")
    @classmethod
    def _check_pseudonym_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty or short key makes patient_ref an (almost) unkeyed hash that can be
        # reversed by trying Patient IDs.
        return _long_enough_key(value)

    @field_validator("chest_body_parts", mode="before")
    @classmethod
    def _split_body_parts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().upper() for part in value.split(",") if part.strip())
        return value


class WatcherSettings(_Group):
    """How the inbox is watched and batched."""

    stable_seconds: Annotated[float, Field(ge=0)] = Field(
        2.0,
        description="A file is taken once its size and modification time have not changed "
        "for this long (files still being copied are left alone).",
    )

    watch_polling: bool = Field(
        False,
        description="Poll the inbox instead of using inotify: for network shares (NFS, SMB) "
        "where change notifications do not arrive.",
    )

    batch_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = Field(
        500,
        description="The watcher sends a partly filled batch after this long, so a lone "
        "scan is not kept waiting.",
    )


class ScreeningSettings(_Group):
    """How workers screen: batches, threads, numerics, claims and retries."""

    batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        16, description="Scans per screening task (one model.predict call)."
    )

    decode_threads: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None,
        description="Threads decoding a batch's files in parallel in each worker (default: "
        "one per CPU core, at most 16: a GPU worker needs them all to keep up).",
    )

    precision: Precision = Field(
        "float32",
        description="Inference precision: `float32`, or `mixed_float16` / `mixed_bfloat16` "
        "(16-bit compute on GPU tensor cores, or bfloat16 on CPUs with AMX; the output "
        "softmax stays float32; each prediction records the precision it was computed in).",
    )

    xla: Xla = Field(
        "auto",
        description="XLA compilation of the forward pass: `auto` (on for GPUs, off on CPU), "
        "`on` or `off`.",
    )

    heatmaps: HeatmapMode = Field(
        "flagged",
        description="Which screened images get a Grad-CAM heatmap (a PNG beside the archived "
        "file and, for DICOM, a Secondary Capture sent with the report): `flagged` (positive "
        "verdicts), `all`, or `off`. Made after the verdict is stored: never delays a result.",
    )

    claim_timeout_s: Annotated[float, Field(gt=0)] = Field(
        600.0,
        description="A scan still `processing` this long after a worker claimed it is "
        "taken back (the worker died) and queued again.",
    )

    requeue_after_s: Annotated[float, Field(gt=0)] = Field(
        300.0,
        description="A scan still `queued` this long after its task was sent is sent again "
        "(the broker lost it, or no model was active).",
    )

    reconcile_interval_s: Annotated[float, Field(gt=0)] = Field(
        60.0, description="How often the scheduler runs the reconcile task."
    )

    max_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        3, description="A scan whose worker died this many times is marked failed."
    )

    @property
    def decode_pool_size(self) -> int:
        """`decode_threads`, or one per core this process may run on (at most 16)."""
        return self.decode_threads or min(len(os.sched_getaffinity(0)), 16)

    @property
    def visibility_timeout_s(self) -> float:
        """Redis redelivers an unacknowledged task after this long.

        Longer than the claim timeout, so the broker never hands a batch to a second
        worker while the first may still be working on it.
        """
        return self.claim_timeout_s * 2 + 60


class TrainingSettings(_Group):
    """What the trainer trains on, with what, and when."""

    data_dir: Path | None = Field(
        None, description="Labelled folders for training: train/NORMAL, train/PNEUMONIA, val/..."
    )

    base_weights: str = Field(
        "imagenet",
        description="Backbone weights: 'imagenet' (download), a .weights.h5 file, or 'none'.",
    )

    backbone: str = Field(
        "vgg16",
        description="Convolutional base of the transfer model: " + ", ".join(BACKBONE_NAMES) + ".",
    )

    train_epochs: Annotated[int, Field(ge=1, le=500)] = Field(5, description="Training epochs.")

    train_batch_size: Annotated[int, Field(ge=1, le=1024)] = Field(
        32, description="Training batch size."
    )

    online_augmentation: bool = Field(
        False,
        description="Train end to end with the seed's online augmentation (shear, zoom, flip) "
        "instead of cached frozen-base features: for GPU hosts.",
    )

    fine_tune: bool = Field(
        True,
        description="Also train the backbone's last convolutional block (VGG16's block 5) "
        "after the head, from cached features of the block's input: off-val specificity "
        "0.870 -> 0.970 on 200 films per class; costs the block's training every night.",
    )

    retrain_cron: str = Field(
        "0 2 * * *", description="When the nightly retraining runs (cron: min hour dom mon dow)."
    )

    bundled_model_dir: Path | None = Field(
        None,
        description="The default model put in service when no model is active (a folder "
        "with head.keras and model_card.json, see trainer.bundled); unset: the one installed "
        "with the package.",
    )

    @field_validator("base_weights")
    @classmethod
    def _check_base_weights(cls, value: str) -> str:
        try:
            choice = read_base_weights(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither 'imagenet', 'none' nor an existing weights file"
            ) from None
        if choice is None:
            return "none"
        return "imagenet" if choice == "imagenet" else value

    @field_validator("backbone")
    @classmethod
    def _check_backbone(cls, value: str) -> str:
        spec = find_backbone(value)
        if spec is None:
            raise ValueError(
                f"unknown backbone {value!r}; choose one of {', '.join(map(repr, BACKBONE_NAMES))}"
            )
        return spec.name

    @field_validator("retrain_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(
                f"{value!r} is not a 5-field cron expression such as '0 2 * * *' (02:00 daily)"
            )
        return value


class PacsSettings(_Group):
    """The DICOM receiver, and the results sent back as Structured Reports."""

    dicom_ae_title: str = Field(
        "CXR_SCREEN",
        description="This node's DICOM AE title: the receiver's called AE title and the "
        "calling AE title of report sends (1-16 characters).",
    )

    dicom_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        11112, description="TCP port of the DICOM receiver (C-STORE and C-ECHO)."
    )

    dicom_bind_address: str = Field(
        "0.0.0.0",  # noqa: S104 - a DICOM node must be reachable by the PACS
        description="Address the DICOM receiver listens on (127.0.0.1 keeps it on the host).",
    )

    dicom_allowed_aes: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Calling AE titles allowed to send (comma-separated); others are "
        "refused at association. `*` allows any. Empty: the receiver refuses to start.",
    )

    receive_enabled: bool = Field(
        False, description="Run the DICOM receiver as part of `cxr-screen up` and compose."
    )

    reports_enabled: bool = Field(
        False,
        description="Send a DICOM Structured Report of each result back to "
        "CXR_REPORT_DESTINATION. Off: DICOM scans are marked `disabled` instead.",
    )

    report_destination: str | None = Field(
        None,
        validate_default=True,  # so that enabling reports without a destination fails
        description="Where reports are sent by C-STORE: AE_TITLE@host:port.",
    )

    report_dir: Path | None = Field(
        None, description="Where a copy of every report is kept (default: ARCHIVE/reports)."
    )

    report_interval_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="How often the scheduler sends the reports that are due."
    )

    report_retry_base_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Wait before the first retry of a failed send; doubles each time."
    )

    report_retry_max_s: Annotated[float, Field(gt=0)] = Field(
        3600.0,
        validate_default=True,  # checked against the base even when only the base is set
        description="Longest wait between two retries of a report.",
    )

    report_max_attempts: Annotated[int, Field(ge=1, le=1000)] = Field(
        72,
        description="A report not delivered after this many tries is marked failed "
        "(72: about three days with the default waits).",
    )

    dicom_tls_cert: Path | None = Field(
        None,
        description="PEM certificate of the DICOM receiver: with CXR_DICOM_TLS_KEY it "
        "accepts only TLS associations (DICOM TLS, PS3.15 B.1).",
    )

    dicom_tls_key: Path | None = Field(
        None, description="PEM private key of CXR_DICOM_TLS_CERT (keep it 0600)."
    )

    dicom_tls_ca: Path | None = Field(
        None,
        description="PEM CA bundle: when set, senders must present a client certificate "
        "signed by it (mutual TLS).",
    )

    dicom_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        30.0, description="Network, association and DIMSE timeout of DICOM connections."
    )

    @field_validator("dicom_tls_cert", "dicom_tls_key", "dicom_tls_ca")
    @classmethod
    def _check_tls_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file (a PEM file is expected)")
        return value

    @field_validator("dicom_tls_ca")
    @classmethod
    def _check_tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        cert, key = info.data.get("dicom_tls_cert"), info.data.get("dicom_tls_key")
        if (cert is None) != (key is None):
            raise ValueError(
                "DICOM TLS needs both CXR_DICOM_TLS_CERT and CXR_DICOM_TLS_KEY (or neither)"
            )
        if value is not None and cert is None:
            raise ValueError(
                "a client CA makes sense only with TLS on: set CXR_DICOM_TLS_CERT and "
                "CXR_DICOM_TLS_KEY too"
            )
        return value

    @field_validator("dicom_ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("dicom_allowed_aes", mode="before")
    @classmethod
    def _split_allowed_aes(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("dicom_allowed_aes")
    @classmethod
    def _check_allowed_aes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "*" in value:
            if len(value) > 1:
                raise ValueError("`*` allows any AE title: give it alone, or list the titles")
            return value
        return tuple(check_ae_title(title) for title in value)

    @field_validator("dicom_bind_address")
    @classmethod
    def _check_bind_address(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give an address: 0.0.0.0 (every interface) or 127.0.0.1 (this host)")
        return value.strip()

    @field_validator("receive_enabled")
    @classmethod
    def _check_receive(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("dicom_allowed_aes"):
            raise ValueError(
                "the receiver would refuse every sender: list the AE titles of the PACS and "
                "modalities that send in CXR_DICOM_ALLOWED_AES (or * to accept any)"
            )
        return value

    @field_validator("report_destination")
    @classmethod
    def _check_destination(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value.strip():
            return str(parse_destination(value))
        if info.data.get("reports_enabled"):
            raise ValueError(
                "CXR_REPORTS_ENABLED is true but no destination is set; give the PACS "
                "as AE_TITLE@host:port (for example PACS@pacs.hospital.org:104), or turn "
                "reports off"
            )
        return None

    @field_validator("report_retry_max_s")
    @classmethod
    def _check_retry_max(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("report_retry_base_s")
        if base is not None and value < base:
            raise ValueError(
                f"{value:g} s is shorter than CXR_REPORT_RETRY_BASE_S ({base:g} s); "
                "raise the maximum or lower the base"
            )
        return value


class WebSettings(_Group):
    """The web pages (`cxr-screen web`): where they listen and how people sign in."""

    web_enabled: bool = Field(
        False,
        description="Run the web pages (`cxr-screen web`) as part of `cxr-screen up`.",
    )

    web_host: str = Field(
        "127.0.0.1",
        description="Address the web pages listen on (127.0.0.1 keeps them on this host; put "
        "a TLS proxy in front before opening them to a network).",
    )

    web_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        8080, description="TCP port of the web pages."
    )

    web_password: SecretStr | None = Field(
        None,
        description="Minimal mode: one shared password for the web pages (signed in as the "
        "`shared` admin account). Per-person accounts: `cxr-screen users add`.",
    )

    web_https: bool = Field(
        False,
        description="The web pages are reached through an HTTPS proxy: mark the session "
        "cookie Secure (the proxy speaks plain HTTP to cxr-screen web, which cannot see it).",
    )

    web_secret: SecretStr | None = Field(
        None,
        description="Key that signs the web pages' session cookies (at least 32 bytes); "
        "generated under var/ when unset. Changing it signs everyone out.",
    )

    @field_validator("web_host")
    @classmethod
    def _check_web_host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give an address: 127.0.0.1 (this host) or 0.0.0.0 (every interface)")
        return value.strip()

    @field_validator("web_password", "web_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes an unset optional variable as an empty string.
        return None if value == "" else value

    @field_validator("web_password")
    @classmethod
    def _check_web_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        size = len(value.get_secret_value())
        if size < MIN_WEB_PASSWORD_CHARS:
            raise ValueError(
                f"the password is {size} characters, shorter than {MIN_WEB_PASSWORD_CHARS}; "
                "choose a longer one, or unset it and add users with `cxr-screen users add`"
            )
        return value

    @field_validator("web_secret")
    @classmethod
    def _check_web_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough_key(value)


class Settings(BaseSettings):
    """Everything a site can configure, by subsystem. Defaults are the embedded setup.

    Each group reads its own `CXR_*` variables (the names are the field names, as
    before the grouping). Keyword arguments may be given flat (`Settings(inbox=...)`):
    each goes to its group, whose other fields still come from the environment.
    """

    model_config = SettingsConfigDict(
        env_prefix="CXR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)
    decoder: DecoderSettings = Field(default_factory=DecoderSettings)
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    screening: ScreeningSettings = Field(default_factory=ScreeningSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of every process."
    )

    @property
    def reports_path(self) -> Path:
        """Where copies of the sent Structured Reports are kept."""
        report_dir = self.pacs.report_dir
        return report_dir if report_dir is not None else self.storage.archive / "reports"

    def __init__(self, **values: Any) -> None:
        # Each group is built here, not by pydantic from a dict, so that it still reads
        # the environment for the fields not given and its errors name the field itself;
        # all groups are tried, so one message names every bad variable at once.
        rest, by_group = _by_group(values)
        problems: list[Any] = []
        for group, kind in GROUP_TYPES.items():
            if group in rest:
                continue  # given whole, as a group object
            try:
                rest[group] = kind(**by_group.get(group, {}))
            except ValidationError as exc:
                problems.extend(exc.errors())
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        super().__init__(**rest)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied; flat field names update their group."""
        routed, by_group = _by_group(update or {})
        for group, flat in by_group.items():
            routed[group] = getattr(self, group).model_copy(update=flat, deep=deep)
        return super().model_copy(update=routed, deep=deep)

    @classmethod
    def variable_names(cls) -> list[str]:
        """Every `CXR_*` variable, in the order of the groups."""
        names = [f"CXR_{name.upper()}" for name in GROUP_OF_FIELD]
        names += [f"CXR_{name.upper()}" for name in cls.model_fields if name not in GROUP_TYPES]
        return names


GROUP_TYPES: dict[str, type[BaseSettings]] = {
    name: field.default_factory  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
    if field.default_factory is not None
}
GROUP_OF_FIELD: dict[str, str] = {
    field: group for group, kind in GROUP_TYPES.items() for field in kind.model_fields
}


def _by_group(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`values` split into the top-level ones and, per group, those naming its fields."""
    rest: dict[str, Any] = {}
    by_group: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        group = GROUP_OF_FIELD.get(key)
        if group is None:
            rest[key] = value
        else:
            by_group.setdefault(group, {})[key] = value
    return rest, by_group


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise `SettingsError` naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # A group's error is about its field, whichever way the group was built.
            field = str(error["loc"][-1]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"CXR_{field.upper()}: {message}")
        raise SettingsError("; ".join(problems)) from None
    except SourceError as exc:
        # A value that could not even be parsed (for example malformed JSON); the
        # message names the field.
        raise SettingsError(f"{exc}; check the CXR_* variable of that field") from None
