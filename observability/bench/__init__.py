"""`hybridgw bench`: a load generator and measuring instrument for any OpenAI-compatible URL
(workload → arrivals → streaming client → metrics → table / JSON / CSV / HTML)."""
