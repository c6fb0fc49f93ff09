"""Data layer: CT slices in canonical orientation (ctslice), DICOM/NIfTI reading and writing (dicom_io),
masks (mask_io), manifests (manifest), pseudonyms (pseudonym), folder ingestion (ingest) and checks (check)."""
