"""The MongoDB job store: the documents (documents), the collection (store), keeping it in
step with Redis (sync), and a worker's copier (mirror). Needs pymongo (``runtime[mongo]``)."""
