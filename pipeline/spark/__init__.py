"""The Spark side: session construction, DataFrame -> DataFrame transforms, and the streaming job."""
