"""ESP failure diagnosis as domain code: the engine (readings in, diagnosis events out,
no I/O), its limits and catalog, readings from files, and the diagnoses' database side."""
