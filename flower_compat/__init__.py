"""Every place SarcoFed replaces a name inside Flower, in one package, installed by explicit calls.

Flower 1.42 has no extension point for these changes, so each is a replacement of a module attribute or
of a method on one object. Each install function first checks the installed Flower (``require_flower``:
any other minor version fails loudly, naming both), then that every name it replaces is still there
(an ``AttributeError`` naming the missing one, never a silent skip). The modules say, per name, why and
which upstream report would make it unnecessary.

=============================  ==========================================================  =================
installed by                   Flower names replaced                                        module
=============================  ==========================================================  =================
``install_secagg_client()``    ``secaggplus_mod``: ``pseudo_rand_gen``, ``quantize``,         ``secagg``
(ClientApp, per message)       ``parameters_to_ndarrays``, ``ndarray_to_bytes``
``install_secagg_server()``    ``secaggplus_workflow``: ``pseudo_rand_gen``,                  ``secagg``
(ServerApp ``main``)           ``bytes_to_ndarray``, ``parameters_addition``,
                               ``parameters_subtraction``, ``dequantize``,
                               ``ndarrays_to_parameters``
``install_simulation_engine``  ``vce_api``: ``add_messages_to_queue``,                        ``serverapp``
(ServerApp module, simulation) ``put_message_into_state``, ``Queue``
``tune_grid(grid)``            the run's ``InMemoryGrid``: ``push_messages``,                 ``serverapp``
(ServerApp ``main``)           ``send_and_receive``; or its ``HttpGrid``: ``send_and_receive``
``install_supernode()``        ``start_client_internal``: ``time``,                           ``supernode``
(``deploy.supernode_main``)    ``http_request_response``; ``flower_supernode``:
                               ``start_client_internal``
=============================  ==========================================================  =================

19 names in all. ``bundle.bundle_files`` replaces nothing but uses four names Flower does not
export (``flwr.cli.utils``, ``flwr.supercore.constant``) to stage an app bundle as ``flwr run`` would.

The mask generator changes what SecAgg+ masks are, not the protocol's messages: a node masking with
Flower's own generator (or another version of ours) would make the sum garbage without any error.
So the server writes ``MASK_PRG_CONFIG_KEY`` = ``MASK_PRG_INFO`` into every setup-stage message
(``server.secure_workflow``) and a node refuses a round whose value is not its own
(``client.boundary``), naming both.
"""

from flower_compat.secagg import MASK_PRG_CONFIG_KEY, install_secagg_client, install_secagg_server, mask_prg_version
from flower_compat.serverapp import install_simulation_engine, tune_grid
from flower_compat.supernode import install_supernode
from flower_compat.version import SUPPORTED_FLOWER, FlowerVersionError, require_flower

__all__ = [
    "MASK_PRG_CONFIG_KEY",
    "SUPPORTED_FLOWER",
    "FlowerVersionError",
    "install_secagg_client",
    "install_secagg_server",
    "install_simulation_engine",
    "install_supernode",
    "mask_prg_version",
    "require_flower",
    "tune_grid",
]
