"""The local model store: entries with manifests, bundles, import and verify.

``layout`` is the store on disk (entries, staging, adding and removing),
``manifest`` the manifest format and hashing, ``bundle`` writes a bundle,
``importer`` verifies and imports one and re-verifies entries in place.
"""
