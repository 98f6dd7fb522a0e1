"""ESP failure diagnosis as shared domain code: the engine (readings in, diagnosis events
out, no I/O), its limits and catalog, readings from files, and the diagnoses' database
side. Driven by the diagnostics service, the API and `insa diagnose`; imports nothing
from services/."""
