//! rs-agent: LVS-DR node agent.
