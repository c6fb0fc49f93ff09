"""What a clinician receives for one slice: result.json, an overlay picture and the mask as DICOM SEG."""
