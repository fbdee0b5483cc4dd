"""OCI image layout, archives and blobs."""
