"""SarcoFed's pure library: data, phantom, models, metrics and local training. No Flower, no network."""
