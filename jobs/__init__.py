"""The work: what a validate-inbox job is and how one is checked."""
