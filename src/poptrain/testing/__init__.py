"""Test helpers shipped with poptrain: contract suites for storage backends and checkpoint stores.

Run the contract against your own backend by subclassing (needs pytest)::

    from poptrain.testing import StorageContract

    class TestMyStorage(StorageContract):
        def make_storage(self, tmp_path):
            return MyStorage(tmp_path / "db")
"""

from poptrain.testing.storage_contract import CheckpointStoreContract, StorageContract

__all__ = ["CheckpointStoreContract", "StorageContract"]
