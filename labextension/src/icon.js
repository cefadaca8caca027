// The MLflow icon of this extension: our own drawing (a tracking chart on a tile), not MLflow's logo file.

import { LabIcon } from '@jupyterlab/ui-components';

export const mlflowIcon = new LabIcon({
  name: 'mlflow-oidc:mlflow',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">' +
    '<rect x="1.5" y="1.5" width="21" height="21" rx="5" fill="#0194E2"/>' +
    '<path d="M5 18.5h14" stroke="#fff" stroke-width="1.2" stroke-linecap="round" opacity=".55" fill="none"/>' +
    '<path d="M5.2 15.5l4-5 3.6 3 5.6-7" stroke="#fff" stroke-width="2.1" stroke-linecap="round" ' +
    'stroke-linejoin="round" fill="none"/>' +
    '<circle cx="18.4" cy="6.5" r="2" fill="#43EDBC"/></svg>'
});
