"""trainyard.core's Datastore against the real daemon (the `trainyard` binary in $TRAINYARD_CLI)
and the object stores of scripts/storage.sh: Azurite for azure_blob, the S3 test server for s3.
The v1 SDK's calls register, fetch and list datastores; a wrong key is refused at registration
and no answer carries a secret. With TRAINYARD_REQUIRE_SERVICES=1 (CI) a missing service fails.
"""

import base64
import hashlib
import hmac
import os
import tempfile
import unittest

from ._workspace import end_workspace
import urllib.request
from email.utils import formatdate

REQUIRE = os.environ.get("TRAINYARD_REQUIRE_SERVICES") == "1"


def storage_info():
    path = os.environ.get("TRAINYARD_STORAGE_ENV", "/var/lib/trainyard-test/storage.env")
    info = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                info[k] = v
    except OSError:
        return None
    return info if info.get("AZURITE_KEY") and info.get("S3_SECRET_ACCESS_KEY") else None


def create_container(info, name):
    """Creates a container in Azurite with a Shared Key signed request (the standard library's
    HMAC, independent of trainyard's signing)."""
    account = info["AZURITE_ACCOUNT"]
    date = formatdate(usegmt=True)
    path = "/%s/%s" % (account, name)
    to_sign = "PUT\n\n\n\n\napplication/octet-stream\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:" \
              "2021-08-06\n/%s%s\nrestype:container" % (date, account, path)
    sig = base64.b64encode(hmac.new(base64.b64decode(info["AZURITE_KEY"]), to_sign.encode(),
                                    hashlib.sha256).digest()).decode()
    origin = info["AZURITE_URL"].rsplit("/", 1)[0]
    req = urllib.request.Request(origin + path + "?restype=container", data=b"", method="PUT",
                                 headers={"x-ms-date": date, "x-ms-version": "2021-08-06",
                                          "Content-Type": "application/octet-stream",
                                          "Authorization": "SharedKey %s:%s" % (account, sig)})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201, r.status


class DatastoreSdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cli = os.environ.get("TRAINYARD_CLI", "")
        info = storage_info()
        why = None
        if not cli or not os.access(cli, os.X_OK):
            why = "TRAINYARD_CLI does not name the trainyard binary"
        elif info is None:
            why = "no storage.env: run scripts/storage.sh"
        if why:
            if REQUIRE:
                raise AssertionError("needed for the datastore SDK test: " + why)
            raise unittest.SkipTest(why)
        cls.info = info
        cls.tmp = tempfile.mkdtemp(prefix="ty-sdk-ds-")
        cls.old_home = os.environ.get("TRAINYARD_HOME")
        os.environ["TRAINYARD_HOME"] = os.path.join(cls.tmp, "ws")
        from trainyard.core import Workspace
        cls.ws = Workspace.from_config(cls.tmp)
        cls.container = "sdk" + os.urandom(4).hex()
        create_container(info, cls.container)

    @classmethod
    def tearDownClass(cls):
        end_workspace(cls.tmp, cls.old_home)

    def test_default_datastore(self):
        ds = self.ws.get_default_datastore()
        self.assertEqual(ds.name, "workspaceblobstore")
        self.assertEqual(ds.type, "local")
        self.assertTrue(os.path.isdir(ds.path_on_host), ds.path_on_host)
        self.assertIn("workspaceblobstore", self.ws.datastores)

    def test_register_blob_container_then_get(self):
        from trainyard.core import Datastore
        info = self.info
        ds = Datastore.register_azure_blob_container(
            self.ws, "blob_sdk", container_name=self.container,
            account_name=info["AZURITE_ACCOUNT"], account_key=info["AZURITE_KEY"],
            endpoint=info["AZURITE_URL"])
        self.assertEqual(ds.datastore_type, "AzureBlob")
        self.assertEqual(ds.container_name, self.container)
        self.assertIsNone(ds.account_key)
        self.assertEqual(ds.as_dict()["credentials"]["account_key"], "***")
        again = Datastore(self.ws, "blob_sdk")
        self.assertEqual(again.account_name, info["AZURITE_ACCOUNT"])
        self.assertNotIn(info["AZURITE_KEY"], repr(again.as_dict()))
        # The same registration again is fine; another container needs overwrite=True.
        Datastore.register_azure_blob_container(
            self.ws, "blob_sdk", container_name=self.container,
            account_name=info["AZURITE_ACCOUNT"], account_key=info["AZURITE_KEY"],
            endpoint=info["AZURITE_URL"])
        from trainyard.core import UserErrorException
        with self.assertRaises(UserErrorException) as ctx:
            Datastore.register_azure_blob_container(
                self.ws, "blob_sdk", container_name="other-" + self.container,
                account_name=info["AZURITE_ACCOUNT"], account_key=info["AZURITE_KEY"],
                endpoint=info["AZURITE_URL"])
        self.assertIn("overwrite=True", str(ctx.exception))

    def test_wrong_key_is_refused_at_registration(self):
        from trainyard.core import Datastore, UserErrorException
        info = self.info
        wrong = base64.b64encode(b"not the key of this account, not at all").decode()
        with self.assertRaises(UserErrorException) as ctx:
            Datastore.register_azure_blob_container(
                self.ws, "blob_wrong", container_name=self.container,
                account_name=info["AZURITE_ACCOUNT"], account_key=wrong,
                endpoint=info["AZURITE_URL"])
        self.assertIn("rejected the credentials", str(ctx.exception))
        self.assertNotIn(wrong, str(ctx.exception))
        self.assertNotIn("blob_wrong", self.ws.datastores)

    def test_register_s3_bucket_and_unregister(self):
        from trainyard.core import Datastore, UserErrorException
        info = self.info
        ds = Datastore.register_s3_bucket(
            self.ws, "s3_sdk", bucket_name=info["S3_BUCKET"], endpoint=info["S3_URL"],
            access_key_id=info["S3_ACCESS_KEY_ID"],
            secret_access_key=info["S3_SECRET_ACCESS_KEY"])
        self.assertEqual(ds.bucket_name, info["S3_BUCKET"])
        self.assertEqual(ds.as_dict()["credentials"]["secret_access_key"], "***")
        with self.assertRaises(UserErrorException) as ctx:
            Datastore.register_s3_bucket(
                self.ws, "s3_wrong", bucket_name=info["S3_BUCKET"], endpoint=info["S3_URL"],
                access_key_id=info["S3_ACCESS_KEY_ID"], secret_access_key="wrong")
        self.assertIn("SignatureDoesNotMatch", str(ctx.exception))
        ds.unregister()
        self.assertNotIn("s3_sdk", self.ws.datastores)
        with self.assertRaises(UserErrorException) as ctx:
            Datastore.get(self.ws, "s3_sdk")
        self.assertIn("does not exist", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
