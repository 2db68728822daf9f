"""The source library: n rendered instances per source, their retriever embeddings, the prompt table
and the search index, stored as one checked directory (store), built by `rospr build-library`."""
