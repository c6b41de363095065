"""Running the services the pipeline needs: Kafka and MySQL, as local processes, containers or external."""
