//! Gantry scheduler: HTTP API for platform services, admission (credits, rate limits, trust, residency) and placement onto pool queues.
