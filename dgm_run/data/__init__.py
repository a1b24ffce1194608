"""Data sources (one module each) and the device-resident batches built from them."""
