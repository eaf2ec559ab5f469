"""Running the queue: the arq worker, its Redis pool, the supervisor process and the job."""
