# labhub's JupyterLab image with JupyterHub's single-user server (`jupyterhub-singleuser`, from
# the real `jupyterhub` package on PyPI): the catalogue image of the tests of JupyterHub's
# single-user contract. Built FROM the local JupyterLab image, so only the package is fetched.
FROM labhub/jupyterlab:1
USER root
# The host's CA bundle, for a site whose way to PyPI re-signs TLS.
COPY host-ca.crt /tmp/host-ca.crt
RUN pip install --no-cache-dir --cert /tmp/host-ca.crt "jupyterhub>=5.3,<6" && rm /tmp/host-ca.crt
USER 1000
