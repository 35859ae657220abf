"""Offline gene knowledge: symbols, aliases, Ensembl ids, GO and KEGG from org.Hs.eg.db."""
