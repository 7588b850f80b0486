"""The atlas explorer (``atlas serve``): browse a store's connectomes in a web browser, the way
neuPrint Explorer and Neuronpedia let people browse theirs. :mod:`explorer.api` answers each page's
questions with the functions the command line calls; :mod:`explorer.app` serves them as JSON next
to a single-page app whose assets are all vendored (it works with no network)."""
