"""adapters/ghl"""
