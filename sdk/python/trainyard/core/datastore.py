"""Datastores: the v1 SDK's `Datastore` on trainyard's datastore API.

    ds = Datastore.register_azure_blob_container(ws, "training_data", container_name="data",
                                                 account_name="myaccount", account_key=KEY)
    ds = Datastore.get(ws, "training_data")
    default = ws.get_default_datastore()      # workspaceblobstore, a folder of the workspace

The daemon checks a datastore's access (one listing with its credentials) before it stores it:
a wrong key raises here, not in a run. Secrets go to the daemon once and are never read back:
`account_key`, `sas_token` and `secret_access_key` of a fetched datastore are None.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

from ._connection import ApiError, seg
from .exceptions import UserErrorException

# The service's datastore_type names, by trainyard type.
_TYPE_NAMES = {"azure_blob": "AzureBlob", "s3": "S3", "local": "Local"}


class Datastore(object):
    """A named place where data lives: `local` (a folder on the daemon's machine), `azure_blob`
    (a container of a storage account) or `s3` (a bucket)."""

    def __new__(cls, workspace: Any = None, name: Optional[str] = None) -> "Datastore":
        # Datastore(ws, name) fetches, as in the v1 SDK; the class methods build from answers.
        if workspace is not None and name is not None:
            return Datastore.get(workspace, name)
        return super().__new__(cls)

    def __init__(self, workspace: Any = None, name: Optional[str] = None) -> None:
        if getattr(self, "_definition", None) is not None:
            return  # made by get/_from_answer
        self.workspace = workspace
        self._definition = {}  # type: Dict[str, Any]
        self.name = name or ""

    @staticmethod
    def _from_answer(workspace: Any, answer: Dict[str, Any]) -> "Datastore":
        ds = object.__new__(Datastore)
        ds.workspace = workspace
        ds._definition = dict(answer)
        ds._definition.pop("outcome", None)
        ds.name = answer.get("name", "")
        return ds

    # --- what it is ------------------------------------------------------------------------

    @property
    def datastore_type(self) -> str:
        return _TYPE_NAMES.get(self._definition.get("type", ""), self._definition.get("type", ""))

    @property
    def type(self) -> str:
        """trainyard's type: local, azure_blob or s3."""
        return self._definition.get("type", "")

    @property
    def container_name(self) -> Optional[str]:
        return self._definition.get("container_name")

    @property
    def account_name(self) -> Optional[str]:
        return self._definition.get("account_name")

    @property
    def bucket_name(self) -> Optional[str]:
        return self._definition.get("bucket")

    @property
    def endpoint(self) -> Optional[str]:
        return self._definition.get("endpoint")

    @property
    def protocol(self) -> Optional[str]:
        return self._definition.get("protocol")

    @property
    def path_on_host(self) -> Optional[str]:
        """A local datastore's folder on the daemon's machine."""
        return self._definition.get("path")

    # Secrets are never read back from the daemon.
    account_key = None
    sas_token = None
    secret_access_key = None

    def as_dict(self) -> Dict[str, Any]:
        """The definition as the daemon holds it, secrets as "***"."""
        return dict(self._definition)

    def __repr__(self) -> str:
        return "Datastore(name=%r, type=%r)" % (self.name, self.type)

    # --- the workspace's datastores ---------------------------------------------------------

    @staticmethod
    def get(workspace: Any, datastore_name: str) -> "Datastore":
        """The datastore `datastore_name`; UserErrorException naming the workspace's datastores
        when there is none."""
        return Datastore._from_answer(
            workspace, workspace._conn.get("/api/v1/datastores/" + seg(datastore_name)))

    @staticmethod
    def get_default(workspace: Any) -> "Datastore":
        return Datastore.get(workspace, "workspaceblobstore")

    @staticmethod
    def list(workspace: Any) -> List["Datastore"]:
        return [Datastore._from_answer(workspace, d)
                for d in workspace._conn.get("/api/v1/datastores")]

    def unregister(self) -> None:
        """Deletes the datastore from the workspace (its data stays where it is)."""
        self.workspace._conn.request("DELETE", "/api/v1/datastores/" + seg(self.name))

    # --- registration -------------------------------------------------------------------------

    @staticmethod
    def _register(workspace: Any, definition: Dict[str, Any], overwrite: bool) -> "Datastore":
        if not overwrite:
            try:
                existing = workspace._conn.get("/api/v1/datastores/" + seg(definition["name"]))
            except ApiError as e:
                if e.status != 404:
                    raise
            else:
                # Registering what exists again is fine; changing it needs overwrite=True.
                mine = {k: v for k, v in definition.items() if k != "credentials"}
                theirs = {k: existing.get(k) for k in mine}
                if any(theirs[k] not in (mine[k], None) for k in mine if mine[k] not in ("", {})):
                    raise UserErrorException(
                        "datastore %r exists with other settings; pass overwrite=True to replace "
                        "it" % definition["name"])
        answer = workspace._conn.post("/api/v1/datastores", definition, timeout=120)
        return Datastore._from_answer(workspace, answer)

    @staticmethod
    def register_azure_blob_container(workspace: Any, datastore_name: str, container_name: str,
                                      account_name: str, sas_token: Optional[str] = None,
                                      account_key: Optional[str] = None,
                                      protocol: Optional[str] = None,
                                      endpoint: Optional[str] = None, overwrite: bool = False,
                                      create_if_not_exists: bool = False,
                                      skip_validation: bool = False, blob_cache_timeout: Any = None,
                                      grant_workspace_access: bool = False,
                                      subscription_id: Any = None,
                                      resource_group: Any = None) -> "Datastore":
        """Registers a blob container. `endpoint` is the storage suffix (core.windows.net) or the
        blob service's URL (Azurite: http://127.0.0.1:10000/ACCOUNT)."""
        if create_if_not_exists:
            raise UserErrorException("create_if_not_exists is not supported: create the container "
                                     "in the storage account first")
        if skip_validation:
            raise UserErrorException("skip_validation is not supported: trainyard always checks "
                                     "a datastore's access when it is registered")
        if sas_token and account_key:
            raise UserErrorException("give either account_key or sas_token, not both")
        credentials = {}  # type: Dict[str, str]
        if account_key:
            credentials["account_key"] = account_key
        if sas_token:
            credentials["sas_token"] = sas_token.lstrip("?")
        definition = {"name": datastore_name, "type": "azure_blob",
                      "account_name": account_name, "container_name": container_name,
                      "protocol": protocol or "https", "endpoint": endpoint or "",
                      "credentials": credentials}
        return Datastore._register(workspace, definition, overwrite)

    @staticmethod
    def register_s3_bucket(workspace: Any, datastore_name: str, bucket_name: str,
                           endpoint: Optional[str] = None, access_key_id: Optional[str] = None,
                           secret_access_key: Optional[str] = None,
                           region: Optional[str] = None, overwrite: bool = False) -> "Datastore":
        """Registers an S3 bucket (AWS, or an S3-compatible service at `endpoint`)."""
        credentials = {}  # type: Dict[str, str]
        if access_key_id or secret_access_key:
            credentials = {"access_key_id": access_key_id or "",
                           "secret_access_key": secret_access_key or ""}
        definition = {"name": datastore_name, "type": "s3", "bucket": bucket_name,
                      "endpoint": endpoint or "", "region": region or "",
                      "credentials": credentials}
        return Datastore._register(workspace, definition, overwrite)

    @staticmethod
    def register_local(workspace: Any, datastore_name: str, path: str,
                       overwrite: bool = False) -> "Datastore":
        """Registers a folder of the daemon's machine (or a shared file system)."""
        definition = {"name": datastore_name, "type": "local", "path": path}
        return Datastore._register(workspace, definition, overwrite)
